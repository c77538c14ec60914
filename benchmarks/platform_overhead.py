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
        flags = ["--num-samples", str(n), "--max-epochs", str(args.epochs)]
        flags += ["--search", "random", "--scheduler", "fifo"]  # images at the last epoch
        flags += ["--storage-path", str(folder / "ray"), "--name", "overhead"]
        flags += ["--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]
        sweep_args = build_parser("", {}).parse_args(flags)
        started = time.perf_counter()
        started_at = time.time()
        outcome = run_sweep(SPACE, base, sweep_args)
        wall = time.perf_counter() - started
        ray.shutdown()
        trials = tune.ExperimentAnalysis(str(folder / "ray" / "overhead")).trials
        last = [t.last_result for t in trials]
        plain = plain_loop([t.config for t in trials], base, args.epochs)
    sum_plain = sum(plain)
    per_trial = (wall * slots - sum_plain) / n
    measured = {p: statistics.mean(r.get(f"overhead_{p}_s", 0.0) for r in last) for p in PARTS}
    first_entry = min(r["entered_at"] for r in last) - started_at
    figures = {
        "trials": n,
        "epochs": args.epochs,
        "slots": slots,
        "sweep_wall_s": wall,
        "plain_sum_s": sum_plain,
        "plain_per_trial_s": sum_plain / n,
        "overhead_per_trial_s": per_trial,
        "measured_in_trial_s": measured,
        "driver_start_to_first_trial_s": first_entry,
        "share_of_a_one_minute_trial": per_trial / (60 + per_trial),
        "registered": f"{outcome.registered.name}/{outcome.registered.version}",
    }
    save_json("platform_overhead", figures)
    write_section("platform_overhead", report(figures))


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
    rest = f["overhead_per_trial_s"] - sum(f["measured_in_trial_s"].values())
    rows = "\n".join(
        f"| {label} | {seconds:.2f} |"
        for label, seconds in [
            ("opening the trial's MLflow run (find or create, params)",
             f["measured_in_trial_s"]["open_run"]),
            ("mapping the prepared data", f["measured_in_trial_s"]["load_data"]),
            ("logging metrics and image grids (every epoch)", f["measured_in_trial_s"]["log"]),
            ("saving checkpoints", f["measured_in_trial_s"]["checkpoint"]),
            ("the rest: worker start, imports, Tune, driver start and end shared out", rest),
        ]
    )  # fmt: skip
    per_trial = f["overhead_per_trial_s"]
    share = f["share_of_a_one_minute_trial"]
    verdict_1s = "met" if per_trial < 1 else f"missed by {per_trial - 1:.1f} s"
    verdict_5 = "met" if share < 0.05 else f"missed by {100 * (share - 0.05):.1f} points"
    return f"""
## Platform overhead per trial

`{command()}` at commit {commit()} on {machine()}. {f["trials"]} trials x {f["epochs"]} epochs
of the conv model on {f["slots"]} slots (1 CPU each) through the sweep engine (random search,
FIFO, MLflow on SQLite, images at the last epoch, checkpoints, final test evaluation and
registration), against the same {f["trials"]} configs trained one after another in a plain
loop (1 thread each).

| | seconds |
|---|---|
| sweep wall time | {f["sweep_wall_s"]:.1f} |
| plain loop, sum of the trainings | {f["plain_sum_s"]:.1f} |
| plain loop, per trial | {f["plain_per_trial_s"]:.1f} |
| driver start to the first trial's start | {f["driver_start_to_first_trial_s"]:.1f} |
| **overhead per trial** = (wall x {f["slots"]} - sum) / {f["trials"]} | **{per_trial:.2f}** |

Where it goes, per trial (each trial times its own parts; the rest is what is left):

| part | seconds per trial |
|---|---|
{rows}

Targets: under 1 s per trial: {verdict_1s}; under 5% of the wall time of a sweep whose trials
train for a minute ({per_trial:.1f} s / (60 s + {per_trial:.1f} s) = {share:.1%}): {verdict_5}.
""" + ("" if math.isfinite(per_trial) else "\n(no valid measurement)\n")


if __name__ == "__main__":
    main()
