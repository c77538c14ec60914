"""The search defaults confirmed live: the engine's default search (TPE + ASHA, as
benchmarks/search_replay.py chose it) against random search without early stopping, on the
real trainer through the real sweep engine, several seeds, the same budget of epochs.

    python benchmarks/search_live.py --data-root ../shared/data               # 5 seeds
    python benchmarks/search_live.py --data-root ../shared/data --seeds 1 --trials 4

The model and data are the recorded table's (benchmarks/curves.py): sweeps/mnist.py's space,
the MLP 256-256 on 4,800 training and 1,200 validation MNIST images; E = --epochs a whole
trial (9 by default, a third of the table's: ASHA's rungs 1, 3 and 9).
Random search: N trials of E epochs, FIFO; the default: no search flag at all, trials
proposed until the same N x E epochs are spent (--epoch-budget). Two trials at a time
(this machine's cores). The figure: the share of random search's epochs the default needed
to reach random search's final best, seed by seed, in the order the epochs were reported.
Writes benchmarks/results/search_live.json and its section of docs/BENCHMARKS.md; the sweeps
are in MLflow (experiment search-efficiency of --tracking-uri, default ./mlflow-bench.db).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from _report import REPO, command, commit, machine, save_json, write_section
from curves import BASE, EPOCHS
from search_efficiency import fraction_to_reach, sweep

sys.path.insert(0, str(REPO / "sweeps"))
import mnist  # noqa: E402  (the sweep script's SEARCH_SPACE)

from sweeps.searcher import DEFAULT_TPE  # noqa: E402
from sweeps.spec import DEFAULTS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--seeds", type=int, default=5, help="pairs of sweeps (default 5)")
    parser.add_argument(
        "--trials", type=int, default=6, help="random search's trials, N (default 6)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=9,
        help=f"epochs of a whole trial (default 9: ASHA's rungs 1, 3, 9; the table's {EPOCHS} "
        "takes three times as long)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=f"sqlite:///{Path.cwd() / 'mlflow-bench.db'}",
        help="MLflow store for the sweeps (default ./mlflow-bench.db)",
    )
    args = parser.parse_args()
    epochs = args.epochs
    budget = args.trials * epochs
    base = {
        "dataset": "mnist",
        "data_root": args.data_root,
        **{k: v for part in BASE.values() for k, v in part.items() if k != "epochs"},
        "iwae_samples": 8,
    }
    # CPU trials, said outright: the second sweep of this process finds Ray running already
    common = ["--max-epochs", str(epochs), "--data-root", args.data_root, "--gpus-per-trial", "0"]
    runs, stamp = [], time.strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="search-") as tmp:
        for seed in range(args.seeds):
            s = ["--seed", str(seed)]
            random, _ = sweep(
                f"live-random-{seed}-{stamp}",
                mnist.SEARCH_SPACE,
                [*common, *s, "--search", "random", "--scheduler", "fifo"]
                + ["--num-samples", str(args.trials)],
                Path(tmp),
                base,
                args.tracking_uri,
            )
            default, trials = sweep(
                f"live-default-{seed}-{stamp}",
                mnist.SEARCH_SPACE,
                [*common, *s, "--num-samples", str(budget), "--epoch-budget", str(budget)],
                Path(tmp),
                base,
                args.tracking_uri,
            )
            target = random[-1][1]
            runs.append(
                {
                    "seed": seed,
                    "random_final_best": target,
                    "default_final_best": default[-1][1],
                    "default_trials": trials,
                    "share": fraction_to_reach(target, default, len(random)),
                }
            )
            print(f"seed {seed}: {runs[-1]}", flush=True)
    minutes = (time.monotonic() - started) / 60
    save_json("search_live", {"trials": args.trials, "epochs": epochs, "runs": runs,
                              "minutes": minutes})  # fmt: skip
    write_section("search_live", report(runs, args.trials, epochs, minutes))


def report(runs: list[dict], trials: int, epochs: int, minutes: float) -> str:
    shares = sorted(r["share"] for r in runs)
    median = shares[(len(shares) - 1) // 2]
    shown = lambda v: f"{v:.0%}" if math.isfinite(v) else "never"  # noqa: E731
    rows = "\n".join(
        f"| {r['seed']} | {r['random_final_best']:.4f} | {r['default_final_best']:.4f} "
        f"| {r['default_trials']} | **{shown(r['share'])}** |"
        for r in runs
    )
    return f"""
## Search defaults, live: the default search against random search (MNIST, MLP)

`{command()}` at commit {commit()} on {machine()}: {minutes:.0f} min.

The recorded table's model and data (MLP 256-256, 4,800 training and 1,200 validation MNIST
images, sweeps/mnist.py's space), {epochs} epochs a whole trial, through the sweep engine, 2
trials at a time. Random search: {trials} trials, FIFO. The default: {DEFAULT_TPE}
with ASHA (grace period {DEFAULTS["grace_period"]}), until the same {trials * epochs} epochs
are spent.

| seed | random: best | default: best | default: trials | share to reach random's best |
|---|---|---|---|---|
{rows}

Median share: **{shown(median)}** (target: at most 25%).
"""


if __name__ == "__main__":
    main()
