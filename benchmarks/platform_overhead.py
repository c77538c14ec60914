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
import tempfile
import time
from pathlib import Path

import ray
import torch
from _report import (
    command,
    commit,
    machine,
    save_json,
    slot_seconds,
    trial_results,
    trial_times,
    write_section,
)
from ray import tune

from sweeps.engine import run_sweep
from sweeps.spec import parse_spec
from vae_core import Config, fit, load_splits

SPACE = {"latent_dim": tune.choice([4, 8, 16, 32]), "kl_weight": tune.loguniform(0.25, 4.0)}


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
        configs = [t["config"] for t in sweeps["reused"]["trials"]]
        plain = plain_loop(configs, base, args.epochs)
    sum_plain = sum(plain)
    figures = {"trials": n, "epochs": args.epochs, "slots": slots, "plain_sum_s": sum_plain,
               "plain_per_trial_s": sum_plain / n}  # fmt: skip
    for mode, run in sweeps.items():
        figures[mode] = breakdown(run, slots, n, sum_plain)
    save_json("platform_overhead", figures)
    write_section("platform_overhead", report(figures))


def breakdown(run: dict, slots: int, n: int, sum_plain: float) -> dict:
    """The overhead per trial and where it goes, in slot-seconds per trial: the slots idle
    while the driver starts and ends, training slower than alone, the parts each trial timed,
    and the rest (between trials: Tune, worker start or reset, the trial's set-up)."""
    trials = run["trials"]
    per_trial, parts, start, end = slot_seconds(trials, run["at"], run["wall"], slots, sum_plain)
    parts["slower_training"] = (sum(t["train"] for t in trials) - sum_plain) / n
    parts["between_trials"] = per_trial - sum(parts.values())
    return {
        "sweep_wall_s": run["wall"],
        "overhead_per_trial_s": per_trial,
        "parts_per_trial_s": parts,
        "driver_start_s": start,
        "driver_end_s": end,
        "share_of_a_one_minute_trial": per_trial / (60 + per_trial),
    }


def sweep(folder: Path, mode: str, n: int, epochs: int, base: dict) -> dict:
    """One sweep of n trials; `fresh`: a new worker process per trial."""
    flags = ["--num-samples", str(n), "--max-epochs", str(epochs), "--name", mode]
    flags += ["--search", "random", "--scheduler", "fifo"]  # images at the last epoch
    flags += ["--storage-path", str(folder / "ray"), "--registry-name", f"overhead-{mode}"]
    flags += ["--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    flags += ["--fresh-workers"] if mode == "fresh" else []
    at, started = time.time(), time.perf_counter()
    run_sweep(parse_spec(SPACE, base, flags))
    wall = time.perf_counter() - started
    ray.shutdown()
    trials = trial_results(folder / "ray" / mode)
    return {"wall": wall, "at": at, "trials": [trial_times(*t) for t in trials]}


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


PART_LABELS = {
    "driver_start": "slots idle until the first trial starts (the driver's imports, Ray, "
    "data, MLflow; the first workers' start), shared out",
    "driver_end": "slots idle while the driver ends (test evaluation, registration), shared out",
    "slower_training": "training slower than alone (2 trials + driver + Ray on 2 cores)",
    "open_run": "opening the trial's MLflow run (find or create, params)",
    "load_data": "mapping the prepared data",
    "log": "logging metrics and image grids",
    "checkpoint": "saving checkpoints",
    "between_trials": "between trials: Tune, worker start or reset, the trial's set-up",
}


def report(f: dict) -> str:
    reused, fresh, n, slots = f["reused"], f["fresh"], f["trials"], f["slots"]
    rows = [
        f"| {label} | {reused['parts_per_trial_s'][key]:.2f} "
        f"| {fresh['parts_per_trial_s'][key]:.2f} |"
        for key, label in PART_LABELS.items()
    ]
    per_trial, share = reused["overhead_per_trial_s"], reused["share_of_a_one_minute_trial"]
    verdict_1s = "met" if per_trial < 1 else f"missed by {per_trial - 1:.1f} s"
    verdict_5 = "met" if share < 0.05 else f"missed by {100 * (share - 0.05):.1f} points"
    ratio = fresh["overhead_per_trial_s"] / per_trial if per_trial > 0 else math.inf
    start = {m: f[m]["driver_start_s"] for m in ("reused", "fresh")}
    end = {m: f[m]["driver_end_s"] for m in ("reused", "fresh")}
    fixed = start["reused"] + end["reused"]
    marginal = per_trial - fixed * slots / n
    at_64 = marginal + fixed * slots / 64
    return f"""
## Platform overhead per trial

`{command()}` at commit {commit()} on {machine()}. {n} trials x {f["epochs"]} epochs
of the conv model on {slots} slots (1 CPU each) through the sweep engine (random search,
FIFO, MLflow on SQLite, images at the last epoch, checkpoints, final test evaluation and
registration), against the same {n} configs trained one after another in a plain
loop (1 thread each, {f["plain_sum_s"]:.1f} s in all, {f["plain_per_trial_s"]:.1f} s per
trial). Overhead per trial = (sweep wall x {slots} - plain sum) / {n}; the
sweep ran twice, with its default (a finished trial's worker takes the next trial) and with
`--fresh-workers` (a new worker process per trial, as Tune does by default).

| | default: workers reused | `--fresh-workers` |
|---|---|---|
| sweep wall time (s) | {reused["sweep_wall_s"]:.1f} | {fresh["sweep_wall_s"]:.1f} |
| driver start to the first trial's start (s) | {start["reused"]:.1f} | {start["fresh"]:.1f} |
| last trial's last report to the driver's end (s) | {end["reused"]:.1f} | {end["fresh"]:.1f} |
| **overhead per trial (s)** | **{per_trial:.2f}** | {fresh["overhead_per_trial_s"]:.2f} |

Reusing workers: **{ratio:.1f}x** less overhead per trial. Where it goes, in slot-seconds
per trial (each trial times its own parts and its epochs; the last row is what is left):

| part | reused | fresh |
|---|---|---|
{chr(10).join(rows)}

Targets, for the default: under 1 s per trial: {verdict_1s}; under 5% of the wall time of a
sweep whose trials train for a minute ({per_trial:.1f} s / (60 s + {per_trial:.1f} s) =
{share:.1%}): {verdict_5}. Of it, the driver's start and end ({fixed:.1f} s per sweep) do not
grow with the trials: without them {marginal:.2f} s per trial, so a sweep of 64 trials
would pay about {at_64:.2f} s per trial.
"""


if __name__ == "__main__":
    main()
