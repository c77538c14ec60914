"""Checks made before a sweep spends compute: each names the input, the place and what would
work. The storage path takes the checkpoints, every node that can run trials can read the
data."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from vae_core import Config, load_splits
from vae_core.data.cache import check_source
from vae_core.model import build_model

KEPT_CHECKPOINTS = 2  # Tune's num_to_keep (sweeps/tuner.py): a trial's two best epochs
CHECKPOINTS_PER_TRIAL = KEPT_CHECKPOINTS + 1  # and its latest


class PreflightError(ValueError):
    """An input that would make trials fail; raised before any trial starts."""


def checkpoint_bytes(config: Config) -> int:
    """About the size of one trial checkpoint: float32 weights plus Adam's two moments."""
    params = sum(p.numel() for p in build_model(config).parameters())
    return 3 * 4 * params + 256 * 1024  # + config, history, RNG state


def check_storage(storage: str, trials: int, config: Config) -> None:
    """--storage-path must be writable and, when local, have room for every checkpoint."""
    if "://" in storage:
        try:
            fs, path = pafs.FileSystem.from_uri(storage)
            fs.create_dir(path)
            probe = f"{path.rstrip('/')}/.vae-sweep-probe"
            with fs.open_output_stream(probe) as f:
                f.write(b"ok")
            fs.delete_file(probe)
        except (OSError, ValueError) as err:
            raise PreflightError(
                f"--storage-path {storage}: cannot write there ({err}); check the URI, the "
                "bucket's region and this machine's credentials"
            ) from None
        return
    folder = Path(storage)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".vae-sweep-probe-"):
            pass
    except OSError as err:
        raise PreflightError(
            f"--storage-path {storage}: cannot write there ({err.strerror}); pass a folder "
            "you can write, or an s3:// URI"
        ) from None
    need = trials * CHECKPOINTS_PER_TRIAL * checkpoint_bytes(config)
    free = shutil.disk_usage(folder).free
    if free < need:
        mib = 2**20
        raise PreflightError(
            f"--storage-path {storage}: {free / mib:.0f} MiB free, the sweep's checkpoints "
            f"need about {need / mib:.0f} MiB ({trials} trials x {CHECKPOINTS_PER_TRIAL} x "
            f"{checkpoint_bytes(config) / mib:.1f} MiB); free some space or pass another path"
        )


def out_of_space(storage: str) -> bool:
    """Whether a local --storage-path has (almost) no space left: what a sweep that failed in
    Tune's own code (a truncated state or error file it cannot read back) failed of."""
    if "://" in storage:
        return False
    try:
        return shutil.disk_usage(storage).free < 2**20
    except OSError:
        return False


@ray.remote(num_cpus=0)
def _read_problem(config: dict) -> str | None:
    """What keeps this node from reading the data; with download, it fetches and prepares it
    here first (once per node, before any trial)."""
    try:
        config = Config.from_dict(config)
        if config.data.download:
            load_splits(config, progress=False)
        else:
            check_source(config)
    except (OSError, ValueError) as err:
        return str(err)
    return None


def check_data_on_nodes(config: Config) -> None:
    """Every live node that can run trials can read the data (the driver's own check does not
    cover workers with other disks). Nodes the autoscaler starts later are not checked: their
    trials fail with the same message."""
    if config.data.dataset == "shapes" and not config.data.data_path:
        return  # generated on each node
    nodes = [
        n
        for n in ray.nodes()
        if n["Alive"] and (n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0)
    ]
    refs = [
        _read_problem.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(config.to_dict())
        for n in nodes
    ]
    problems = [
        f"node {n['NodeManagerAddress']} ({n['NodeID'][:8]}): {problem}"
        for n, problem in zip(nodes, ray.get(refs, timeout=600), strict=True)
        if problem
    ]
    if problems:
        raise PreflightError(
            "trials would fail where the data cannot be read:\n  "
            + "\n  ".join(problems)
            + "\nput the data at the same path on every node, or prepare it once into a "
            "shared file (vae-data prepare ... --out s3://...) and pass --data-path"
        )


def check_own_state(folder: str) -> None:
    """--resume unpickles Tune's saved experiment state (searcher, trial configs): load it only
    from a folder of this user's that nobody else can write. Remote storage (s3://) is
    guarded by its own access rights."""
    if "://" in folder:
        return
    for path in (Path(folder), *Path(folder).glob("*.pkl"), *Path(folder).glob("*.json")):
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o002:
            raise PreflightError(
                f"--resume: {path} belongs to another user or anyone may write it; resuming "
                "unpickles the sweep's saved state, so it is only done from your own storage "
                "path (chown/chmod it, or start a new sweep)"
            )
