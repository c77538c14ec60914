"""Platform overhead as a sweep grows: 16, 128 and 1,000 one-epoch trials of a tiny model
through the real engine, each sweep in a fresh driver process, and where the driver's time
goes as the trials add up.

    python benchmarks/scale.py                  # 16, 128, 1000 trials; random, TPE (~20 min)
    python benchmarks/scale.py --sizes 16 128   # the first two sizes (~5 min)
    python benchmarks/scale.py --quick          # 4 trials, random and TPE (~1 min)
    python benchmarks/scale.py --profile        # each driver under py-spy (pip install py-spy)
    python benchmarks/scale.py --keep DIR       # keep the sweeps; again: read, not rerun

(minutes measured at 1b9b15f on 2 cores shared with other jobs, load 2-8)

overhead per trial = (sweep wall x slots - the trials' own training seconds) / N, as
benchmarks/platform_overhead.py, with the driver's start and end apart. The driver times
itself: its wrapped calls (Optuna's ask and tell, the MLflow client, Tune's step, its
experiment-state saves, the callbacks, the sweep's settle and finish) are timed exclusively
(a call's own time, without the wrapped calls inside it), in wall and CPU seconds; its CPU
and peak memory come from getrusage, Ray's own processes' CPU from psutil. With --profile
py-spy samples the driver and its top functions are kept. Each sweep runs a private local
Ray (RAY_ADDRESS=local): a cluster already running on the machine is never joined.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from functools import wraps
from pathlib import Path

from _report import (
    REPO,
    command,
    commit,
    machine,
    save_json,
    slot_seconds,
    trial_results,
    trial_times,
    write_section,
)

SEARCHES = ("random", "tpe")
SIZES = (16, 128, 1000)
SLOTS = 2  # one CPU per trial on this 2-core machine; main() checks it
# A tiny model on a few hundred images: an epoch is ~0.05 s, so what is measured is the
# platform, not the training.
BASE = {"dataset": "shapes", "arch": "mlp", "hidden_dims": [64], "image_size": 16,
        "limit": 512, "batch_size": 64, "iwae_samples": 4, "device": "cpu"}  # fmt: skip
FIGURE = REPO / "docs" / "figures" / "scale.png"
# The anchors the issue gives, in the units compared here
RAY_ANCHOR = (715 * 16 - 10_000) / 10_000  # Ray's 10,000 one-second trials, 16 cores: slot-s
OPTUNA_ANCHOR = {"early": 1 / 70, "after_1000": 1 / 8}  # TPE: seconds per trial (ask + tell)


def space():
    from ray import tune

    return {"latent_dim": tune.choice([2, 4, 8, 16]), "kl_weight": tune.loguniform(0.25, 4.0)}


# The driver's side: timers wrapped around what it calls


class Timers:
    """Calls, wall and CPU seconds by category, exclusive: a wrapped call's time without the
    wrapped calls inside it, so the categories add up to no more than the sweep's wall time.
    A call inside a call of the same group (an MLflow client method calling another, Optuna's
    tell calling its parent class's) is counted once, in the outer one."""

    def __init__(self) -> None:
        self.table: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
        self.local = threading.local()

    def wrap(self, owner, name: str, category: str, group: str | None = None) -> None:
        inner, group = getattr(owner, name), group or category

        @wraps(inner)
        def timed(*args, **kwargs):
            stack = self.local.__dict__.setdefault("stack", [])
            if any(frame[0] == group for frame in stack):
                return inner(*args, **kwargs)
            frame = [group, 0.0, 0.0]  # group, wall and CPU of the wrapped calls inside
            stack.append(frame)
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
                stack.pop()
                row = self.table[category]
                row[0] += 1
                row[1] += wall - frame[1]
                row[2] += cpu - frame[2]
                row[3] += wall  # inclusive
                if stack:
                    stack[-1][1] += wall
                    stack[-1][2] += cpu

        setattr(owner, name, timed)

    def figures(self) -> dict[str, dict[str, float]]:
        return {
            k: {"calls": int(c), "wall_s": w, "cpu_s": u, "inclusive_s": i}
            for k, (c, w, u, i) in sorted(self.table.items())
        }


def instrument(timers: Timers) -> None:
    """Wrap what the driver does between its start and its end (classes and the module
    attributes the engine calls them through)."""
    import ray
    from mlflow.tracking import MlflowClient
    from ray.air.execution._internal.actor_manager import RayActorManager
    from ray.tune import Tuner
    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis
    from ray.tune.callback import CallbackList
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.search import BasicVariantGenerator, SearchGenerator
    from ray.tune.search.optuna import OptunaSearch

    from sweeps import console, engine, finish, lifecycle, searcher, tuner

    w = timers.wrap
    w(TuneController, "step", "tune: step loop (its own)")
    w(RayActorManager, "next", WAITING)
    w(TuneController, "save_to_dir", "tune: experiment state saved")
    # a forced save first waits for the copy of the previous one to the storage path
    w(_ExperimentCheckpointManager, "sync_up_experiment_state", "tune: experiment state copied")
    w(CallbackList, "save_to_dir", "tune: callbacks' state saved")
    w(SearchGenerator, "save_to_dir", "searcher: state saved")
    w(BasicVariantGenerator, "save_to_dir", "searcher: state saved")
    w(SearchGenerator, "next_trial", "tune: trial created")
    w(BasicVariantGenerator, "next_trial", "tune: trial created")
    w(searcher.PruningAwareOptunaSearch, "suggest", "optuna: ask")
    w(searcher.PruningAwareOptunaSearch, "on_trial_complete", "optuna: tell", "tell")
    w(OptunaSearch, "on_trial_result", "optuna: tell", "tell")
    w(ExperimentAnalysis, "__init__", "tune: ExperimentAnalysis (after fit)")
    w(Tuner, "fit", "tune: fit (rest)")
    for hook in ("on_trial_result", "on_trial_complete", "on_trial_error"):
        w(lifecycle.EndTrialRuns, hook, "callback: EndTrialRuns (rest)")
        w(console.EpochLines, hook, "callback: EpochLines")
        for logger in (CSVLoggerCallback, JsonLoggerCallback):
            w(logger, hook, "callback: CSV and JSON loggers")
    w(console.EpochLines, "on_step_end", "callback: EpochLines")
    for name in dir(MlflowClient):
        if not name.startswith("_") and callable(getattr(MlflowClient, name)):
            w(MlflowClient, name, f"mlflow: {name}", "mlflow")
    w(ray, "init", "driver: ray.init")
    w(engine, "load_splits", "driver: data prepared")
    w(tuner, "build_tuner", "driver: Tuner built")
    w(lifecycle.SweepRuns, "settle", "driver: settle (rest)")
    w(engine, "finish", "driver: finish (rest)")
    w(finish, "_evaluate_all", "driver: finish, test evaluation")
    w(finish, "log_sweep_plots", "driver: finish, sweep plots")
    w(finish, "_register", "driver: finish, registration")
    w(finish, "study_of", "driver: finish, study of a random sweep")
    w(searcher, "end_unfinished", "driver: finish, study checked")


def ray_processes_cpu() -> dict[str, float]:
    """CPU seconds of this driver's Ray processes (GCS, raylet, workers, agents), by name;
    workers that already exited are not counted."""
    import psutil  # Ray's own copy, on the path once ray is imported

    cpu: Counter = Counter()
    for proc in psutil.Process().children(recursive=True):
        try:
            name = proc.name()
            times = proc.cpu_times()
        except psutil.Error:
            continue
        group = "trial workers" if name.startswith("ray::") else name
        cpu[group] += times.user + times.system
    return dict(cpu)


def drive(n: int, search: str, folder: Path, epochs: int = 1) -> None:
    """One sweep of n trials in this process (a fresh one per size); folder/driver.json."""
    import ray

    from sweeps.engine import run_sweep
    from sweeps.spec import parse_spec

    sha = commit()
    timers = Timers()
    instrument(timers)
    flags = ["--num-samples", str(n), "--max-epochs", str(epochs), "--search", search]
    flags += ["--name", f"{search}-{n}", "--registry-name", f"scale-{search}-{n}"]
    flags += ["--storage-path", str(folder / "ray")]
    flags += ["--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    load, before = os.getloadavg(), resource.getrusage(resource.RUSAGE_SELF)
    at, started = time.time(), time.perf_counter()
    run_sweep(parse_spec(space(), BASE, flags))
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ray_cpu = ray_processes_cpu()
    ray.shutdown()
    import psutil

    figures = {
        "trials": n,
        "search": search,
        "epochs": epochs,
        "commit": sha,  # the tree may change while a long benchmark runs
        "at": at,
        "wall_s": wall,
        "load_before": load,  # other jobs on the machine: figures under load are provisional
        "load_after": os.getloadavg(),
        "process_start_to_sweep_s": at - psutil.Process().create_time(),
        "driver_cpu_s": (usage.ru_utime + usage.ru_stime) - (before.ru_utime + before.ru_stime),
        "driver_cpu_before_sweep_s": before.ru_utime + before.ru_stime,
        "driver_peak_rss_mib": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "ray_processes_cpu_s": ray_cpu,
        "timers": timers.figures(),
        "experiment_state_bytes": state_bytes(folder / "ray" / f"{search}-{n}"),
    }
    (folder / "driver.json").write_text(json.dumps(figures, indent=1))


def state_bytes(experiment: Path) -> int:
    """Size of Tune's experiment state file, rewritten whole at each save."""
    return sum(p.stat().st_size for p in experiment.glob("experiment_state-*.json"))


# The benchmark's side: one fresh driver per size, then the figures


def sweep(n: int, search: str, folder: Path, profile: bool, epochs: int = 1) -> dict:
    """Run one size in a fresh process (under py-spy with `profile`); its driver's figures,
    its trials' times. A folder kept from an earlier run (--keep) that holds its driver's
    figures is read again instead."""
    if not (folder / "driver.json").exists():
        shutil.rmtree(folder, ignore_errors=True)  # a run cut short
        folder.mkdir(parents=True)
        driver = [sys.executable, __file__, "--drive", str(n), search, str(folder), str(epochs)]
        if profile:
            driver = ["py-spy", "record", "--format", "raw", "--rate", "50", "--nonblocking",
                      "--output", str(folder / "profile.txt"), "--", *driver]  # fmt: skip
        env = {**os.environ, "RAY_ADDRESS": "local"}  # a private Ray, never a running cluster
        print(f"scale: {n} trials, {search}", file=sys.stderr, flush=True)
        done = subprocess.run(driver, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"scale: the sweep of {n} {search} trials failed:\n"
                             f"{done.stderr[-4000:]}")  # fmt: skip
    figures = json.loads((folder / "driver.json").read_text())
    trials = [trial_times(*t) for t in trial_results(folder / "ray" / f"{search}-{n}")]
    figures |= breakdown(figures, trials)
    if (folder / "profile.txt").exists():
        figures["profile"] = top_functions(folder / "profile.txt")
    return figures


def breakdown(d: dict, trials: list[dict]) -> dict:
    """Overhead per trial in slot-seconds and where it goes: the slots idle while the driver
    starts and ends, the parts the trials timed, the rest (between trials); the driver's
    own figures per trial."""
    n = d["trials"]
    if len(trials) != n:
        raise SystemExit(f"scale: {len(trials)} trials reported, expected {n}")
    train = sum(t["train"] for t in trials)
    per_trial, parts, start, end = slot_seconds(trials, d["at"], d["wall_s"], SLOTS, train)
    parts["between_trials"] = per_trial - sum(parts.values())
    return {
        "train_per_trial_s": train / n,
        "overhead_per_trial_s": per_trial,
        "overhead_without_start_end_s": per_trial - parts["driver_start"] - parts["driver_end"],
        "parts_per_trial_s": parts,
        "driver_start_s": start,
        "driver_end_s": end,
        "driver_cpu_per_trial_s": d["driver_cpu_s"] / n,
        "ray_cpu_per_trial_s": sum(d["ray_processes_cpu_s"].values()) / n,
    }


def top_functions(raw: Path, count: int = 12) -> dict:
    """py-spy's raw stacks summed by function: the functions most samples were in (self) and
    under (inclusive), as shares of the driver's samples from the sweep's start to its end,
    its other threads included (py-spy leaves idle threads out); and the share of the
    samples in the timers' own code (what timing the driver costs it)."""
    own, under, total, timers = Counter(), Counter(), 0, 0
    for line in _stacks(raw):
        stack, _, samples = line.rpartition(" ")
        n, frames = int(samples), [f for f in stack.split(";") if f]
        if not frames:
            continue  # a sample in native code only (a thread of Ray's): no Python stack
        timers += n if TIMED in frames[-1] else 0
        frames = [_function(f) for f in frames if TIMED not in f]  # the callers instead
        if not frames:
            continue
        if SWEEP in frames:  # what the sweep's code is under says more than the entry frames
            frames = frames[frames.index(SWEEP) + 1 :] or [SWEEP]
        elif any(f.startswith("drive (") for f in frames):
            continue  # the driver's imports before the sweep, its exit after
        frames = [f for f in frames if "(threading.py)" not in f]
        if not frames:
            continue  # a thread between two tasks, in threading's own code
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            under[frame] += n
    share = lambda pairs: [(name, n / total) for name, n in pairs]  # noqa: E731
    return {"samples": total, "self": share(own.most_common(count)),
            "inclusive": share(under.most_common(count)), "timers": timers / total}  # fmt: skip


def _stacks(raw: Path) -> list[str]:
    """The lines of py-spy's raw output, `frame;frame;... samples`, a stack whose frame name
    holds a newline joined back into one."""
    stacks, part = [], ""
    for line in raw.read_text().splitlines():
        part += line
        if re.search(r" \d+$", part):
            stacks.append(part)
            part = ""
    return stacks


SWEEP = "run_sweep (sweeps/engine.py)"
TIMED = "Timers.wrap.<locals>.timed"


def _function(frame: str) -> str:
    """`save_to_dir (ray/tune/execution/tune_controller.py)`, the line number dropped (py-spy
    writes paths from the import root)."""
    name, _, where = frame.partition(" (")
    path = where.rpartition(":")[0]
    for root in ("site-packages/", str(REPO) + "/", "lib/python3.11/"):
        path = path.split(root, 1)[-1]
    return f"{name} ({path})"


def measure(sizes, searches, folder: Path, profile: bool = False, epochs: int = 1) -> dict:
    """Every (size, search) sweep, smallest first, with the data prepared once before."""
    from vae_core import Config, load_splits

    os.environ["VAE_CACHE_DIR"] = str(folder / "cache")
    load_splits(Config.from_dict(BASE), progress=False)
    runs = []
    for n in sizes:
        for search in searches:
            runs.append(sweep(n, search, folder / f"{search}-{n}", profile, epochs))
    return {"slots": SLOTS, "base": BASE, "runs": runs, "anchors": anchors()}


def anchors() -> dict:
    return {"ray_bookkeeping_slot_s_per_trial": RAY_ANCHOR,
            "optuna_tpe_s_per_trial": OPTUNA_ANCHOR,
            "platform_overhead_16_two_epoch_trials_s": 3.85,
            "vanilla_tune_optuna_s_per_trial": 10.0}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--searches", nargs="+", choices=SEARCHES, default=list(SEARCHES))
    parser.add_argument("--quick", action="store_true", help="4 trials of each search")
    parser.add_argument("--profile", action="store_true", help="each driver under py-spy")
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep every sweep's folder here; a sweep "
        "whose folder holds its figures already is read, not run again",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="epochs per trial (default 1: "
        "ASHA stops none; more: Tune's saves every num_to_keep checkpoints)",
    )
    # the driver's own process: python benchmarks/scale.py --drive N SEARCH FOLDER EPOCHS
    parser.add_argument("--drive", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        n, search, folder, epochs = args.drive
        return drive(int(n), search, Path(folder), int(epochs))
    if (os.cpu_count() or 1) != SLOTS:
        print(f"scale: {os.cpu_count()} cores; the figures assume {SLOTS}", file=sys.stderr)
    if args.profile and shutil.which("py-spy") is None:
        raise SystemExit("scale: --profile needs py-spy on PATH (pip install py-spy)")
    sizes = [4] if args.quick else sorted(args.sizes)
    folder = Path(args.keep or tempfile.mkdtemp(prefix="scale-"))
    try:
        figures = measure(sizes, args.searches, folder, args.profile, args.epochs)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    figures["mode"] = "quick" if args.quick else "full" if args.epochs == 1 else "epochs"
    figures["epochs"] = args.epochs
    figures |= verdicts(figures["runs"])
    save_json("scale", figures)
    plot(figures["runs"])
    write_section("scale", report(figures))


# What the figures say


def by(runs: list[dict], search: str) -> dict[int, dict]:
    return {r["trials"]: r for r in runs if r["search"] == search}


def verdicts(runs: list[dict]) -> dict:
    """The issue's two targets, for the default search (random + ASHA): flat (1,000 trials
    within 1.2x of 128 per trial) and under a second per trial at 128."""
    default = by(runs, "random")
    at_128 = default.get(128, {}).get("overhead_per_trial_s")
    at_1000 = default.get(1000, {}).get("overhead_per_trial_s")
    return {"growth_1000_vs_128": at_1000 / at_128 if at_128 and at_1000 else None,
            "per_trial_at_128_s": at_128}  # fmt: skip


def plot(runs: list[dict]) -> None:
    """Overhead per trial (with and without the driver's fixed start and end) and the driver's
    CPU per trial against the number of trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for search, colour in zip(SEARCHES, ("C0", "C1"), strict=True):
        points = sorted(by(runs, search).items())
        if not points:
            continue
        ns = [n for n, _ in points]
        ax.plot(ns, [r["overhead_per_trial_s"] for _, r in points], "o-", color=colour,
                label=f"{search}: overhead per trial (slot-s)")  # fmt: skip
        ax.plot(ns, [r["overhead_without_start_end_s"] for _, r in points], "^:", color=colour,
                label=f"{search}: the same without the driver's start and end")  # fmt: skip
        ax.plot(ns, [r["driver_cpu_per_trial_s"] for _, r in points], "s--", color=colour,
                label=f"{search}: driver CPU per trial (s)")  # fmt: skip
    ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="target: 1 s per trial")
    ax.axhline(RAY_ANCHOR, color="k", lw=0.8, ls="-.", label="Ray's own bookkeeping")
    ax.set_xscale("log")
    ax.set_xlabel("trials in the sweep")
    ax.set_ylabel("seconds per trial")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=120)
    plt.close(fig)


def per_trial(run: dict, *prefixes: str, key: str = "wall_s") -> float:
    """Exclusive seconds per trial (wall_s, cpu_s) of the driver's timer categories that start
    with one of `prefixes`."""
    rows = [v for k, v in run["timers"].items() if k.startswith(prefixes)]
    return sum(v[key] for v in rows) / run["trials"]


def busy(run: dict) -> float:
    """The share of the sweep's wall time the driver's main thread spent in its timed calls
    other than waiting for Ray's events: past 100% of it, the driver is what trials wait on."""
    waiting = run["timers"].get(WAITING, {}).get("wall_s", 0.0)
    return (sum(v["wall_s"] for v in run["timers"].values()) - waiting) / run["wall_s"]


WAITING = "tune: Ray events (waiting, handling)"


def calls(run: dict, *prefixes: str) -> float:
    rows = [v for k, v in run["timers"].items() if k.startswith(prefixes)]
    return sum(v["calls"] for v in rows) / run["trials"]


# The driver's time by what does it: (label, the timer categories' prefixes)
SHOWN = (
    ("Optuna ask + tell", ("optuna",)),
    ("MLflow calls", ("mlflow",)),
    ("Tune: experiment state saved (searcher's, callbacks' included)",
     ("tune: experiment", "searcher: state", "tune: callbacks'")),
    ("Tune: step loop and Ray events, own (mostly waiting)", ("tune: step", "tune: Ray")),
    ("Tune: trials created, fit's set-up and end", ("tune: trial", "tune: fit", "tune: Exp")),
    ("callbacks (EndTrialRuns, EpochLines, loggers), MLflow apart", ("callback",)),
    ("driver start: ray.init, data, Tuner", ("driver: ray", "driver: data", "driver: Tuner")),
    ("settle and finish, MLflow apart", ("driver: settle", "driver: finish")),
)  # fmt: skip


def report(f: dict) -> str:
    runs = sorted(f["runs"], key=lambda r: (r["search"], r["trials"]))

    def row(label: str, value) -> str:
        return f"| {label} | " + " | ".join(value(r) for r in runs) + " |"

    def ms(*prefixes: str):
        return lambda r: (f"{1000 * per_trial(r, *prefixes):.1f} "
                          f"({1000 * per_trial(r, *prefixes, key='cpu_s'):.1f})")  # fmt: skip

    rows = [
        row("commit (the tree may change during a run)", lambda r: r.get("commit", "-")),
        row("load average (1 min) before / after", lambda r: f"{r['load_before'][0]:.1f} / "
            f"{r['load_after'][0]:.1f}"),
        row("sweep wall time (s)", lambda r: f"{r['wall_s']:.0f}"),
        row("**overhead per trial (slot-s)**", lambda r: f"**{r['overhead_per_trial_s']:.2f}**"),
        row("of it without the driver's start and end", lambda r:
            f"{r['overhead_without_start_end_s']:.2f}"),
        row("driver: imports / start / end (s)", lambda r: f"{r['process_start_to_sweep_s']:.0f}"
            f" / {r['driver_start_s']:.1f} / {r['driver_end_s']:.1f}"),
        row("training per trial (s)", lambda r: f"{r['train_per_trial_s']:.2f}"),
        *(row(f"trial part per trial: {PART_LABELS[p]} (slot-s)",
              lambda r, p=p: f"{r['parts_per_trial_s'][p]:.2f}") for p in PART_LABELS),
        row("driver CPU per trial (s)", lambda r: f"{r['driver_cpu_per_trial_s']:.3f}"),
        row("driver's main thread busy (not waiting for Ray's events), share of the wall",
            lambda r: f"{busy(r):.0%}"),
        row("Ray's processes' CPU per trial (s)", lambda r: f"{r['ray_cpu_per_trial_s']:.3f}"),
        row("driver peak RSS (MiB)", lambda r: f"{r['driver_peak_rss_mib']:.0f}"),
        row("Tune's experiment state file (MB)", lambda r:
            f"{r['experiment_state_bytes'] / 1e6:.1f}"),
        row("Tune's experiment state saves per trial", lambda r:
            f"{calls(r, 'tune: experiment state saved'):.2f}"),
        row("driver's MLflow calls per trial", lambda r: f"{calls(r, 'mlflow'):.1f}"),
        *(row(f"{label}, ms per trial: wall (CPU)", ms(*prefixes)) for label, prefixes in SHOWN),
    ]  # fmt: skip
    head = "| | " + " | ".join(f"{r['search']} {r['trials']}" for r in runs) + " |"
    epochs = "One-epoch trials" if f.get("epochs", 1) == 1 else f"Trials of {f['epochs']} epochs"
    return f"""
## Overhead per trial as a sweep grows (scale)

`{command()}` at commit {commit()} (each sweep's in the table) on {machine()}.
{epochs} of an MLP (16 px shapes, 512 images, ~0.1 s an epoch) through the sweep
engine with its defaults (random + ASHA; TPE with `--search tpe`), MLflow on SQLite,
{f["slots"]} slots of 1 CPU, each sweep in a fresh driver process with a private local Ray.
Overhead per trial = (sweep wall x {f["slots"]} - the trials' own training seconds) / N. The
driver's rows come from timers wrapped around its calls, each call's own time without the
timed calls inside it, and from getrusage; the load average says how busy the machine was
(figures under a load above 2 are provisional).

![overhead per trial against the number of trials](figures/scale.png)

{head}
|---|{"---:|" * len(runs)}
{chr(10).join(rows)}

{growth_text(f)}

{anchors_text(f)}

{profile_text(runs)}

{targets_text(f)}
"""


PART_LABELS = {
    "driver_start": "slots idle until the first trial starts",
    "driver_end": "slots idle while the driver ends",
    "open_run": "opening the trial's MLflow run",
    "load_data": "mapping the data",
    "log": "logging metrics and grids",
    "checkpoint": "saving checkpoints",
    "between_trials": "between trials (Tune, the worker's reset, set-up)",
}


def growth_text(f: dict) -> str:
    """What grows: the driver's categories whose wall ms per trial grew most from the
    second-largest size to the largest, per search."""
    lines = []
    for search in SEARCHES:
        sizes = sorted(by(f["runs"], search).items())
        if len(sizes) < 2:
            continue
        (small, a), (large, b) = sizes[-2], sizes[-1]
        grew = sorted(
            ((1000 * (per_trial(b, k) - per_trial(a, k)), k) for k in b["timers"]), reverse=True
        )[:5]
        said = ", ".join(f"{k} {d:+.1f}" for d, k in grew)
        lines.append(f"- {search}, {small} -> {large} trials: overhead per trial "
                     f"{a['overhead_per_trial_s']:.2f} -> {b['overhead_per_trial_s']:.2f} s; "
                     f"driver CPU per trial {a['driver_cpu_per_trial_s']:.3f} -> "
                     f"{b['driver_cpu_per_trial_s']:.3f} s; the driver's timers that grew "
                     f"most, ms of wall per trial: {said}")  # fmt: skip
    if not lines:
        return ""
    epochs = {r.get("epochs", 1) for r in f["runs"]}
    caveat = (
        "\n\nOne-epoch trials never make Tune save its whole state (every trial's) on their "
        "account: it does so whenever a trial has made num_to_keep (2) checkpoints since the "
        "last save. Trials of several epochs still do, at a cost that grows with the sweep: "
        "`--epochs 10` measures it."
        if epochs == {1}
        else ""
    )
    return "What grows with the trials:\n\n" + "\n".join(lines) + caveat


def anchors_text(f: dict) -> str:
    lines = ["| anchor (the issue's figures) | theirs | ours | ours / theirs |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for r in sorted(f["runs"], key=lambda r: (r["search"], r["trials"])):
        ours = r["overhead_without_start_end_s"]
        lines.append(
            f"| Ray Tune's bookkeeping (10,000 one-second trials, 715 s on 16 cores), "
            f"slot-s per trial; ours {r['search']} {r['trials']} without the driver's "
            f"start and end | {RAY_ANCHOR:.3f} | {ours:.2f} | {ours / RAY_ANCHOR:.1f}x |"
        )
    for n, r in sorted(by(f["runs"], "tpe").items()):
        theirs = OPTUNA_ANCHOR["after_1000" if n >= 1000 else "early"]
        ours = per_trial(r, "optuna")
        lines.append(
            f"| Optuna TPE ({'8 trials/s after 1,000' if n >= 1000 else '70 trials/s'}"
            f"), ms per trial; ours ask + tell at {n} trials | {1000 * theirs:.0f} | "
            f"{1000 * ours:.1f} | {ours / theirs:.2f}x |"
        )
    for n, r in sorted(by(f["runs"], "random").items()):
        ours = r["overhead_per_trial_s"]
        lines.append(
            f"| vanilla Ray Tune + OptunaSearch on this machine, s per trial; ours "
            f"random {n} | 10 | {ours:.2f} | {ours / 10:.2f}x |"
        )
    return "\n".join(lines)  # fmt: skip


def profile_text(runs: list[dict]) -> str:
    """py-spy's top functions by own samples, per sweep (--profile)."""
    shown = [r for r in runs if "profile" in r]
    if not shown:
        return ""
    lines = [
        "py-spy on each driver (50 Hz; the share of its samples from the sweep's start to "
        "its end, all threads), the functions most samples were in:",
        "",
    ]
    for r in shown:
        p = r["profile"]
        top = "; ".join(f"`{name}` {share:.0%}" for name, share in p["self"][:6])
        lines.append(
            f"- {r['search']} {r['trials']} ({p['samples']} samples, the timers "
            f"{p.get('timers', 0):.1%}): {top}"
        )
    return "\n".join(lines)  # fmt: skip


def targets_text(f: dict) -> str:
    growth, at_128 = f["growth_1000_vs_128"], f["per_trial_at_128_s"]
    flat = (
        "not measured"
        if growth is None
        else (f"{growth:.2f}x: " + ("met" if growth <= 1.2 else "**missed**"))
    )
    fast = (
        "not measured"
        if at_128 is None
        else (f"{at_128:.2f} s: " + ("met" if at_128 < 1 else f"**missed** by {at_128 - 1:.2f} s"))
    )
    return (f"Targets, for the default search: overhead per trial at 1,000 trials within 1.2x "
            f"of that at 128: {flat}; under 1 s per trial at 128 trials: {fast}.")  # fmt: skip


if __name__ == "__main__":
    main()
