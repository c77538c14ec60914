"""Command-line entry points (console scripts declared in pyproject.toml)."""

import atexit
import gc
import sys


def end_without_collecting() -> None:
    """Let this process end without the last garbage collection Python runs as it exits: with
    torch, ray and mlflow loaded it costs 1-3 s on 2 cores and frees nothing the OS would
    not. Called by each command's main (in-process callers such as tests keep collecting
    until their own exit); the other atexit handlers (Ray's shutdown, MLflow's) still run."""
    atexit.register(_freeze)


def _freeze() -> None:
    # Where triton is loaded (torch._dynamo loads it, and torchvision's datasets load that),
    # its bindings print a page of "nanobind: leaked ..." for each object left uncollected.
    if "triton" not in sys.modules:
        gc.freeze()
