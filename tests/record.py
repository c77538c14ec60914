"""Figures a fault test measured (seconds to recover, runs duplicated, points dropped...),
collected for docs/RELIABILITY.md by `python benchmarks/reliability.py`, which runs the tests
with $VAE_SWEEP_RECORD naming a JSON-lines file. Without it, recording does nothing. The tests
assert correctness; the figures here are reported, never asserted."""

import json
import os


def record(case: str, **figures) -> None:
    path = os.environ.get("VAE_SWEEP_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"case": case, **figures}) + "\n")
