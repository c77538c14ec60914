"""The search defaults confirmed live: the engine's default search (random sampling + ASHA, as
benchmarks/search_replay.py chose it) against random search without early stopping, and TPE +
ASHA beside them, on the real trainer through the real sweep engine, several seeds, the same
budget of epochs.

    python benchmarks/search_live.py --data-root ../shared/data               # 10 seeds
    python benchmarks/search_live.py --data-root ../shared/data --seeds 1 --trials 4

The model and data are the recorded table's (benchmarks/curves.py): sweeps/mnist.py's space,
the MLP 256-256 on 4,800 training and 1,200 validation MNIST images; E = --epochs a whole
trial (9 by default, a third of the table's: ASHA's rungs 1, 3 and 9).
Random search: N trials of E epochs, FIFO; the default (no search flag at all) and --search
tpe: trials proposed until the same N x E epochs are spent (--epoch-budget). Two trials at a
time (this machine's cores). The figure: the share of random search's epochs each needed to
reach random search's final best, seed by seed, in the order the epochs were reported.
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

from sweeps.plan import rungs  # noqa: E402
from sweeps.spec import DEFAULTS  # noqa: E402

# what each sweep of a seed passes; the default: no search flag at all
METHODS = {
    "random": ["--search", "random", "--scheduler", "fifo"],
    "default": [],
    "tpe": ["--search", "tpe"],
}
ASHA = ("default", "tpe")
LABELS = {"default": f"the default (--search {DEFAULTS['search']} + ASHA)", "tpe": "TPE + ASHA"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument(
        "--seeds", type=int, default=10, help="seeds, three sweeps each (default 10)"
    )
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
            curves = {}
            for method, flags in METHODS.items():
                if method != "random":  # ASHA: trials started until the budget is spent
                    flags = [*flags, "--num-samples", str(budget), "--epoch-budget", str(budget)]
                else:
                    flags = [*flags, "--num-samples", str(args.trials)]
                curves[method] = sweep(
                    f"live-{method}-{seed}-{stamp}",
                    mnist.SEARCH_SPACE,
                    [*common, "--seed", str(seed), *flags],
                    Path(tmp),
                    base,
                    args.tracking_uri,
                )
            target = curves["random"][0][-1][1]
            runs.append(
                {"seed": seed, "random_final_best": target}
                | {
                    f"{m}_{k}": v
                    for m, (points, trials) in curves.items()
                    if m != "random"
                    for k, v in {
                        "final_best": points[-1][1],
                        "trials": trials,
                        "share": fraction_to_reach(target, points, budget),
                    }.items()
                }
            )
            print(f"seed {seed}: {runs[-1]}", flush=True)
    minutes = (time.monotonic() - started) / 60
    save_json("search_live", {"trials": args.trials, "epochs": epochs, "runs": runs,
                              "minutes": minutes})  # fmt: skip
    write_section("search_live", report(runs, args.trials, epochs, minutes))


def median(values: list[float]) -> float:
    """The lower median: 'never' (inf) counts as the largest."""
    return sorted(values)[(len(values) - 1) // 2]


def report(runs: list[dict], trials: int, epochs: int, minutes: float) -> str:
    milestones = ", ".join(map(str, rungs(epochs, DEFAULTS["grace_period"])))
    shown = lambda v: f"{v:.0%}" if math.isfinite(v) else "never"  # noqa: E731
    rows = "\n".join(
        f"| {r['seed']} | {r['random_final_best']:.4f} "
        + " ".join(
            f"| {r[f'{m}_final_best']:.4f} | {r[f'{m}_trials']} | **{shown(r[f'{m}_share'])}** "
            for m in ASHA
        )
        + "|"
        for r in runs
    )
    medians = "; ".join(
        f"{LABELS[m]}: **{shown(median([r[f'{m}_share'] for r in runs]))}** "
        f"({sum(math.isfinite(r[f'{m}_share']) for r in runs)}/{len(runs)} reached)"
        for m in ASHA
    )
    better = sum(r["default_final_best"] <= r["tpe_final_best"] for r in runs)
    return (
        f"""
## Search defaults, live: the default search against random search and TPE (MNIST, MLP)

`{command()}` at commit {commit()} on {machine()}: {minutes:.0f} min.

The recorded table's model and data (MLP 256-256, 4,800 training and 1,200 validation MNIST
images, sweeps/mnist.py's space), {epochs} epochs a whole trial, through the sweep engine, 2
trials at a time, {len(runs)} seeds. Random search: {trials} trials, FIFO. The default (random
sampling) and TPE (`--search tpe`, Optuna's defaults), each with ASHA (grace period
{DEFAULTS["grace_period"]}, rungs at {milestones}): trials started until the same
{trials * epochs} epochs are spent. With the same seed, random search and the default draw the
same configs first. Share: the epochs spent until the best val_bpd so far was at most random
search's final best, over the budget.

| seed | random: best | default: best | trials | share | TPE + ASHA: best | trials | share |
|---|---|---|---|---|---|---|---|
{rows}

Median share to reach random search's best: {medians} (target: at most 25%). The default's
final best was at least as good as TPE's in {better} of {len(runs)} seeds.
""".replace("{rows}", rows)
        .replace("{medians}", medians)
        .replace("{better}", str(better))
    )


if __name__ == "__main__":
    main()
