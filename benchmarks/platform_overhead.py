"""What the platform costs per trial: N short trials through the full sweep engine (Ray Tune,
random search, no early stopping, MLflow logging, checkpoints, the final evaluation and
registration) against the same N trainings one after another in a plain Python loop.

    python benchmarks/platform_overhead.py             # 16 trials x 2 epochs, ~5 minutes
    python benchmarks/platform_overhead.py --quick     # 4 trials

overhead per trial = (sweep wall time x concurrent slots - sum of the plain trainings) / N,
with the part of it each trial measured itself (opening its MLflow run, mapping the data,
logging, checkpointing); the rest is the worker's start and imports, Tune's own bookkeeping,
and the driver's start and end shared out over the trials.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch
from _report import command, commit, machine, save_json, write_section
from ray import tune

from sweeps.engine import build_parser, run_sweep
from vae_core import Config, fit, load_splits

SPACE = {"latent_dim": tune.choice([4, 8, 16, 32]), "kl_weight": tune.loguniform(0.25, 4.0)}
PARTS = ("open_run", "load_data", "log", "checkpoint")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=1024, help="shapes images used")
    parser.add_argument("--quick", action="store_true", help="4 trials")
    args = parser.parse_args()
    n = 4 if args.quick else args.trials
    slots = max(1, os.cpu_count() or 1)  # one CPU per trial
    base = {"dataset": "shapes", "arch": "conv", "batch_size": 64, "limit": args.images}
    base |= {"iwae_samples": 4, "device": "cpu"}
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        folder = Path(tmp)
        os.environ["VAE_CACHE_DIR"] = str(folder / "cache")
        load_splits(Config.from_dict(base), progress=False)  # prepared once, before timing
        sweeps = {mode: sweep(folder, mode, n, args.epochs, base) for mode in ("reused", "fresh")}
        configs = [t.config for t in sweeps["reused"]["trials"]]
        plain = plain_loop(configs, base, args.epochs)
    sum_plain = sum(plain)
    figures = {"trials": n, "epochs": args.epochs, "slots": slots, "plain_sum_s": sum_plain,
               "plain_per_trial_s": sum_plain / n}  # fmt: skip
    for mode, run in sweeps.items():
        last = [t.last_result for t in run["trials"]]
        per_trial = (run["wall"] * slots - sum_plain) / n
        figures[mode] = {
            "sweep_wall_s": run["wall"],
            "overhead_per_trial_s": per_trial,
            "measured_in_trial_s": {
                p: statistics.mean(r.get(f"overhead_{p}_s", 0.0) for r in last) for p in PARTS
            },
            "driver_start_to_first_trial_s": min(r["entered_at"] for r in last) - run["at"],
            "share_of_a_one_minute_trial": per_trial / (60 + per_trial),
        }
    save_json("platform_overhead", figures)
    write_section("platform_overhead", report(figures))


def sweep(folder: Path, mode: str, n: int, epochs: int, base: dict) -> dict:
    """One sweep of n trials; `fresh`: a new worker process per trial."""
    flags = ["--num-samples", str(n), "--max-epochs", str(epochs), "--name", mode]
    flags += ["--search", "random", "--scheduler", "fifo"]  # images at the last epoch
    flags += ["--storage-path", str(folder / "ray"), "--registry-name", f"overhead-{mode}"]
    flags += ["--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    flags += ["--fresh-workers"] if mode == "fresh" else []
    at, started = time.time(), time.perf_counter()
    run_sweep(SPACE, base, build_parser("", {}).parse_args(flags))
    wall = time.perf_counter() - started
    ray.shutdown()
    trials = tune.ExperimentAnalysis(str(folder / "ray" / mode)).trials
    return {"wall": wall, "at": at, "trials": trials}


def plain_loop(configs: list[dict], base: dict, epochs: int) -> list[float]:
    """Seconds of each training alone, one CPU thread as a trial has, same data."""
    torch.set_num_threads(1)
    data = load_splits(Config.from_dict(base), progress=False)
    seconds = []
    for params in configs:
        config = Config.from_dict(base).replace(**params, epochs=epochs)
        start = time.perf_counter()
        fit(config, data)
        seconds.append(time.perf_counter() - start)
    return seconds


def report(f: dict) -> str:
    reused, fresh = f["reused"], f["fresh"]
    parts = [
        ("opening the trial's MLflow run (find or create, params)", "open_run"),
        ("mapping the prepared data", "load_data"),
        ("logging metrics and image grids", "log"),
        ("saving checkpoints", "checkpoint"),
    ]
    rows = []
    for label, key in parts:
        rows.append(
            f"| {label} | {reused['measured_in_trial_s'][key]:.2f} "
            f"| {fresh['measured_in_trial_s'][key]:.2f} |"
        )
    rest = {m: f[m]["overhead_per_trial_s"] - sum(f[m]["measured_in_trial_s"].values())
            for m in ("reused", "fresh")}  # fmt: skip
    rows.append(
        "| the rest: worker start and imports, Tune, the driver's start and end shared out "
        f"| {rest['reused']:.2f} | {rest['fresh']:.2f} |"
    )
    per_trial, share = reused["overhead_per_trial_s"], reused["share_of_a_one_minute_trial"]
    verdict_1s = "met" if per_trial < 1 else f"missed by {per_trial - 1:.1f} s"
    verdict_5 = "met" if share < 0.05 else f"missed by {100 * (share - 0.05):.1f} points"
    ratio = fresh["overhead_per_trial_s"] / per_trial if per_trial > 0 else math.inf
    first = {m: f[m]["driver_start_to_first_trial_s"] for m in ("reused", "fresh")}
    return f"""
## Platform overhead per trial

`{command()}` at commit {commit()} on {machine()}. {f["trials"]} trials x {f["epochs"]} epochs
of the conv model on {f["slots"]} slots (1 CPU each) through the sweep engine (random search,
FIFO, MLflow on SQLite, images at the last epoch, checkpoints, final test evaluation and
registration), against the same {f["trials"]} configs trained one after another in a plain
loop (1 thread each, {f["plain_sum_s"]:.1f} s in all, {f["plain_per_trial_s"]:.1f} s per
trial). Overhead per trial = (sweep wall x {f["slots"]} - plain sum) / {f["trials"]}; the
sweep ran twice, with its default (a finished trial's worker takes the next trial) and with
`--fresh-workers` (a new worker process per trial, as Tune does by default).

| | default: workers reused | `--fresh-workers` |
|---|---|---|
| sweep wall time (s) | {reused["sweep_wall_s"]:.1f} | {fresh["sweep_wall_s"]:.1f} |
| driver start to the first trial's start (s) | {first["reused"]:.1f} | {first["fresh"]:.1f} |
| **overhead per trial (s)** | **{per_trial:.2f}** | {fresh["overhead_per_trial_s"]:.2f} |

Reusing workers: **{ratio:.1f}x** less overhead per trial. Where it goes, in seconds per trial
(each trial times its own parts; the rest is what is left):

| part | reused | fresh |
|---|---|---|
{chr(10).join(rows)}

Targets, for the default: under 1 s per trial: {verdict_1s}; under 5% of the wall time of a
sweep whose trials train for a minute ({per_trial:.1f} s / (60 s + {per_trial:.1f} s) =
{share:.1%}): {verdict_5}.
"""


if __name__ == "__main__":
    main()
