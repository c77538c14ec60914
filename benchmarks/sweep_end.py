"""The driver's start and end of a sweep, for this checkout against earlier commits run in the
same session: from the command's start to the first trial's first epoch logged (imports, Ray,
the workers' imports); from the last trial's last epoch to the sweep's run ending (the best
checkpoint evaluated on test with its IWAE bound, its grids drawn, the model registered, the
plots logged); from then to the process's exit (Ray's shutdown, Python's own).

    python benchmarks/sweep_end.py                       # against f9abf8a, db59366, fe6e575
    python benchmarks/sweep_end.py --baselines REV ... --repeats 1 --full

Each baseline runs from a git worktree of REV (its own sweeps/ and vae_core/ first on
PYTHONPATH, for the driver and Ray's workers alike), in this environment. f9abf8a evaluated
the best model inside the driver; db59366 always in a Ray task with a trial's resources; this
checkout in a task on a cluster it joined (a GPU worker instead of the head's CPU) and in the
driver on a local Ray, which is what runs here; fe6e575 imported torchvision for its grids
and ran Python's last garbage collection at exit. All read the same MLflow store layout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import REPO, save_json, write_section
from mlflow.tracking import MlflowClient

SCENARIOS = {
    "smoke": ["--smoke-test"],  # 2 trials x 2 epochs on 256 images, IWAE k = 4
    "full": ["--num-samples", "2", "--max-epochs", "1", "--grace-period", "1"],  # k = 16
}


def run(checkout: Path, folder: Path, name: str, flags: list[str]) -> dict:
    """One shapes sweep from `checkout`: its whole time, and its start, end and exit, the
    command's clock against the store's timestamps."""
    store = folder / f"{name}.db"
    env = {**os.environ, "PYTHONPATH": str(checkout), "VAE_CACHE_DIR": str(folder / "cache")}
    started, started_at = time.monotonic(), time.time()
    done = subprocess.run(
        [sys.executable, str(checkout / "sweeps" / "shapes.py"), *flags, "--name", name]
        + ["--tracking-uri", f"sqlite:///{store}", "--storage-path", str(folder / "ray")],
        cwd=folder, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall, exited_at = time.monotonic() - started, time.time()
    if done.returncode != 0:
        raise SystemExit(f"sweep {name} from {checkout} failed:\n{done.stderr[-3000:]}")
    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs(["1"])
    parent = next(r for r in runs if r.data.tags.get("vae_sweep.role") == "sweep")
    trials = [r for r in runs if r.data.tags.get("vae_sweep.role") == "trial"]
    logged = [
        m.timestamp
        for r in trials
        for key in r.data.metrics
        for m in client.get_metric_history(r.info.run_id, key)
    ]
    return {
        "wall_s": wall,
        "start_s": min(logged) / 1000 - started_at,
        "end_s": (parent.info.end_time - max(logged)) / 1000,
        "exit_s": exited_at - parent.info.end_time / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baselines", nargs="+", default=["f9abf8a", "db59366", "fe6e575"], metavar="REV"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--full", action="store_true", help="also 2 one-epoch trials on all shapes"
    )
    args = parser.parse_args()
    scenarios = {k: v for k, v in SCENARIOS.items() if k == "smoke" or args.full}
    figures: dict = {"baselines": args.baselines, "repeats": args.repeats, "scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="sweep-end-") as tmp:
        folder = Path(tmp)
        checkouts = {rev: folder / rev for rev in args.baselines}
        for rev, path in checkouts.items():
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(path), rev],
                cwd=REPO, check=True, capture_output=True,
            )  # fmt: skip
        checkouts["this"] = REPO
        try:
            for scenario, flags in scenarios.items():
                found: dict = {label: [] for label in checkouts}
                for n in range(args.repeats):  # interleaved: all see the same machine
                    for label, checkout in checkouts.items():
                        found[label].append(
                            run(checkout, folder, f"{scenario}-{label}-{n}", flags)
                        )
                        print(scenario, label, found[label][-1], file=sys.stderr, flush=True)
                figures["scenarios"][scenario] = found
        finally:
            for rev in args.baselines:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(folder / rev)], cwd=REPO
                )
    write_section("sweep_end", report(json.loads(save_json("sweep_end", figures).read_text())))


WHAT = {
    "f9abf8a": "in the driver",
    "db59366": "a Ray task, always",
    "fe6e575": "the driver, torchvision's grids, Python's last collection",
    "this": "a task on a joined cluster; here (local Ray) the driver",
}
PARTS = {  # figure -> what the table calls it
    "end_s": "end: last epoch to the sweep's run ended",
    "start_s": "start: command to the first epoch logged",
    "exit_s": "exit: the sweep's run ended to the process gone",
    "wall_s": "the whole command",
}


def report(figures: dict) -> str:
    labels = [*figures["baselines"], "this"]
    first = labels[0]
    lines = [
        "## The driver's start and end of a sweep, and where the best model is evaluated",
        "",
        f"{figures['machine']}; commit {figures['commit']}; `{figures['command']}`",
        "",
        "The end runs from the last trial's last epoch to the sweep's run ending (test",
        "evaluation, IWAE bound, grids, registration, plots); `sweeps/shapes.py` on a local Ray,",
        f"median of {figures['repeats']} runs each, interleaved; the ratio is to {first}.",
        "",
        "| sweep | " + " | ".join(f"{x} ({WHAT.get(x, x)})" for x in labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    # scenario -> part -> label -> seconds (a part saved before it was measured left out)
    medians = {
        scenario: {
            part: {k: statistics.median(r[part] for r in v) for k, v in found.items()}
            for part in PARTS
            if part in found[first][0]
        }
        for scenario, found in figures["scenarios"].items()
    }
    for scenario, parts in medians.items():
        for part, value in parts.items():
            cells = [f"{value[x]:.1f} s ({value[x] / value[first]:.2f}x)" for x in labels]
            lines.append(
                f"| {scenario} `{' '.join(SCENARIOS[scenario])}`, {PARTS[part]} | "
                + " | ".join(cells)
                + " |"
            )
    last = labels[-2]  # the newest baseline
    for scenario, parts in medians.items():
        if len(labels) > 2 and "exit_s" in parts:
            said = ", ".join(
                f"{PARTS[p].split(':')[0]} {v['this'] / v[last]:.2f}x" for p, v in parts.items()
            )
            lines += ["", f"This checkout against {last}, {scenario}: {said}."]
    lines += [
        "",
        "A task gets one trial's CPUs (torch then uses 1 thread of 2) and a worker to start",
        "(imports): on one machine with no GPU that made the end about 2x longer, so a local Ray",
        "evaluates in the driver again, with every core. What the task buys on a cluster, a GPU",
        "for k = 64 importance samples over CelebA's 19,962 test images instead of the head's",
        "CPU, needs a GPU cluster to measure; tests/test_cluster.py and test_autoscaling.py",
        "check that it runs on a worker.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
