"""Search efficiency on MNIST: ASHA + TPE against random search without early stopping and a
coarse grid, the same budget of epochs, several seeds, all through the real sweep engine.

    python benchmarks/search_efficiency.py --data-root ../shared/data          # 3 seeds
    python benchmarks/search_efficiency.py --data-root ../shared/data --quick  # 1 seed

The search space is sweeps/mnist.py's (latent size, KL weight, sigma_x, likelihood, lr) on
a fixed subset of MNIST. Random search runs N trials of E epochs (budget N x E epochs); the
grid is 3 x 3 x 3 points of latent size, KL weight and sigma_x (the other parameters at the
space's middle), E epochs each; ASHA + TPE proposes trials until the same budget is spent
(the engine's --epoch-budget). For each run, every reported epoch in time order gives the
curve of the best val_bpd so far against epochs consumed. The figure: the fraction of random
search's epochs that ASHA + TPE needed to reach random search's final best (target: at most
25%).
Writes benchmarks/results/search_efficiency.json, docs/figures/search_efficiency.png and its
section of docs/BENCHMARKS.md. Every sweep is also in MLflow, experiment search-efficiency
of --tracking-uri (default ./mlflow-bench.db), with a run `summary` holding the figure and
each seed's fraction: `mlflow ui --backend-store-uri sqlite:///mlflow-bench.db`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from _report import (  # noqa: E402
    REPO,
    RESULTS,
    command,
    commit,
    machine,
    save_json,
    trial_results,
    write_section,
)
from mlflow.tracking import MlflowClient  # noqa: E402
from ray import tune  # noqa: E402

sys.path.insert(0, str(REPO / "sweeps"))
import mnist  # noqa: E402  (the sweep script's SEARCH_SPACE and BASE_CONFIG)

from sweeps.engine import run_sweep  # noqa: E402
from sweeps.spec import parse_spec  # noqa: E402
from sweeps.tracking import PARENT, ROLE  # noqa: E402

FIGURE = REPO / "docs" / "figures" / "search_efficiency.png"
EXPERIMENT = "search-efficiency"
GRID = {  # points per axis -> the coarse grid's values of each axis
    3: {"latent_dim": [4, 16, 64], "kl_weight": [0.3, 1.0, 3.0], "sigma_x": [0.05, 0.1, 0.2]},
    2: {"latent_dim": [8, 32], "kl_weight": [0.5, 2.0], "sigma_x": [0.05, 0.15]},
}


def grid_space(points: int) -> dict:
    """points^3: latent size, KL weight and sigma_x; likelihood and lr at the middle."""
    axes = {key: tune.grid_search(values) for key, values in GRID[points].items()}
    return {**axes, "likelihood": "gaussian_learned", "lr": 1e-3}


def curve(outcome_path: Path) -> tuple[list[tuple[int, float]], int]:
    """(epochs consumed, best val_bpd so far) after each reported epoch, in time order; and
    the number of trials."""
    points = []
    trials = trial_results(outcome_path)
    for _, results in trials:  # none for a trial started as the budget ran out
        for result in results:
            if math.isfinite(result.get("val_bpd", math.nan)):
                points.append((result["reported_at"], result["val_bpd"]))
    points.sort()  # by when each epoch was reported, across the trials
    best, out = math.inf, []
    for n, (_, value) in enumerate(points, start=1):
        best = min(best, value)
        out.append((n, best))
    return out, len(trials)


def sweep(
    name: str, space: dict, flags: list[str], folder: Path, base: dict, uri: str
) -> tuple[list[tuple[int, float]], int]:
    where = ["--name", name, "--storage-path", str(folder / "ray"), "--tracking-uri", uri]
    where += ["--experiment", EXPERIMENT, "--registry-name", "search-efficiency"]
    run_sweep(parse_spec(space, base, [*where, "--image-every", "100", *flags]))
    return curve(folder / "ray" / name)


def fraction_to_reach(target: float, points: list[tuple[int, float]], budget: int) -> float:
    """Epochs ASHA + TPE consumed until its best reached `target`, over `budget`."""
    for n, best in points:
        if best <= target:
            return n / budget
    return math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, 2000 images, a 2x2x2 grid, E = 3"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--epochs", type=int, default=9, help="E, epochs of a full trial (ASHA rungs 1, 3, 9)"
    )
    parser.add_argument("--limit", type=int, default=3000, help="MNIST images used")
    parser.add_argument(
        "--tracking-uri",
        default=f"sqlite:///{Path.cwd() / 'mlflow-bench.db'}",
        help="MLflow store for the sweeps and the summary (default ./mlflow-bench.db)",
    )
    parser.add_argument(
        "--from-json",
        action="store_true",
        help="only redraw the figure and the section from benchmarks/results' JSON",
    )
    args = parser.parse_args()
    if args.from_json:
        figures = json.loads((RESULTS / "search_efficiency.json").read_text())
        for run in figures["runs"]:  # results of an older script: read MLflow for it
            if "early_vs_final" not in run:
                pattern, epochs = f"random-{run['seed']}-%", figures["epochs"]
                run["early_vs_final"] = early_vs_final(args.tracking_uri, pattern, epochs)
        publish(figures)
        return
    seeds, limit, points = (1, 2000, 2) if args.quick else (args.seeds, args.limit, 3)
    epochs = 3 if args.quick else args.epochs
    grid_trials = points**3
    budget = grid_trials * epochs
    base = {**mnist.BASE_CONFIG, "data_root": args.data_root, "limit": limit, "iwae_samples": 8}
    common = ["--max-epochs", str(epochs), "--data-root", args.data_root]
    runs, stamp = [], time.strftime("%Y%m%d-%H%M%S")  # sweep names unique in the MLflow store
    with tempfile.TemporaryDirectory(prefix="search-") as tmp:
        folder = Path(tmp)
        for seed in range(seeds):
            s = ["--seed", str(seed)]
            random, _ = sweep(
                f"random-{seed}-{stamp}",
                mnist.SEARCH_SPACE,
                [*common, *s, "--search", "random", "--scheduler", "fifo"]
                + ["--num-samples", str(grid_trials)],
                folder,
                base,
                args.tracking_uri,
            )
            grid, _ = sweep(
                f"grid-{seed}-{stamp}",
                grid_space(points),
                [*common, *s, "--search", "random", "--scheduler", "fifo", "--num-samples", "1"],
                folder,
                base,
                args.tracking_uri,
            )
            asha, asha_trials = sweep(
                f"asha-tpe-{seed}-{stamp}",
                mnist.SEARCH_SPACE,
                [*common, *s, "--num-samples", str(budget), "--epoch-budget", str(budget)]
                + ["--grace-period", "1"],
                folder,
                base,
                args.tracking_uri,
            )
            target = random[-1][1]
            runs.append(
                {
                    "seed": seed,
                    "random": random,
                    "grid": grid,
                    "asha_tpe": asha,
                    "asha_tpe_trials": asha_trials,
                    "random_final_best": target,
                    "fraction_to_reach_random_best": fraction_to_reach(target, asha, len(random)),
                }
            )
            name = f"random-{seed}-{stamp}"
            runs[-1]["early_vs_final"] = early_vs_final(args.tracking_uri, name, epochs)
            figures = {"budget_epochs": budget, "limit": limit, "epochs": epochs}
            figures |= {"grid_points": points, "seeds": seeds, "runs": runs}
            save_json("search_efficiency", figures)  # after each seed: hours of work kept
    publish(figures)
    log_summary(args.tracking_uri, runs, budget)


def early_vs_final(uri: str, sweep: str, epochs: int) -> dict[str, float]:
    """Spearman's rank correlation, over the trials of the random search `sweep` (a name,
    or a LIKE pattern: the latest match of E epochs), every one trained E epochs, between
    val_bpd after each of ASHA's rung epochs and after E: how well the epochs where ASHA
    stops trials predict the end. From the sweep's MLflow runs."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    parents = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{ROLE}` = 'sweep' and attributes.run_name LIKE '{sweep}' "
        f"and params.max_epochs = '{epochs}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`{PARENT}` = '{parents[0].info.run_id}'"
    )
    curves = []
    for run in children:
        history = client.get_metric_history(run.info.run_id, "val_bpd")
        curve = {m.step: m.value for m in history if math.isfinite(m.value)}
        if epochs in curve:
            curves.append(curve)
    rungs = [3**k for k in range(5) if 3**k < epochs]
    return {str(r): spearman([c[r] for c in curves], [c[epochs] for c in curves]) for r in rungs}


def spearman(a: list[float], b: list[float]) -> float:
    """Pearson's correlation of the ranks (the values are floats: no ties)."""
    ranks = [np.argsort(np.argsort(np.asarray(v))) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def publish(figures: dict) -> None:
    """The figure and the section, from the results (also `--from-json`)."""
    runs, budget = figures["runs"], figures["budget_epochs"]
    plot(runs)
    points = figures["grid_points"]
    body = report(runs, budget, figures["limit"], figures["epochs"], points, points**3)
    measured = (figures.get(k, now()) for k, now in (("command", command), ("commit", commit)))
    body = body.replace("{measured}", "`{}` at commit {}".format(*measured), 1)
    write_section("search_efficiency", body)


def log_summary(uri: str, runs: list[dict], budget: int) -> None:
    """The figure and each seed's fraction, as a run beside the sweeps in MLflow."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="summary", tags={"commit": commit()}):
        mlflow.log_params({"budget_epochs": budget, "seeds": len(runs), "command": command()})
        for run in runs:
            fraction = run["fraction_to_reach_random_best"]
            if math.isfinite(fraction):
                mlflow.log_metric(f"fraction_to_reach_random_best_seed{run['seed']}", fraction)
        mlflow.log_artifact(str(FIGURE))


def plot(runs: list[dict]) -> None:
    """The gap between each search's best so far and the best any of the three found with
    that seed, on a log scale: where the searches differ is near the end, a few hundredths of
    a bit, which a linear axis from the first trials' values would flatten."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"asha_tpe": "tab:red", "random": "tab:blue", "grid": "tab:grey"}
    labels = {"asha_tpe": "ASHA + TPE", "random": "random, no early stopping", "grid": "grid"}
    for i, run in enumerate(runs):
        floor = min(run[key][-1][1] for key in colours)
        for key, colour in colours.items():
            xs, ys = zip(*run[key], strict=True)
            gaps = [y - floor + 1e-3 for y in ys]
            ax.step(xs, gaps, where="post", color=colour, alpha=0.8,
                    label=labels[key] if i == 0 else None)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("epochs consumed (each search: the same budget)")
    ax.set_ylabel("best val_bpd so far - the seed's best + 0.001")
    ax.set_title("Search efficiency on MNIST (one line per seed)")
    ax.legend()
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    plt.close(fig)


def report(
    runs: list[dict],
    budget: int,
    limit: int,
    epochs: int,
    points: int,
    grid_trials: int,
) -> str:
    rows = [
        "| seed | random: final best | grid: final best | ASHA + TPE: final best "
        "| ASHA + TPE trials | fraction of random's epochs to reach its best "
        "| rank correlation with epoch E of epoch 1 / 3 |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        fraction = run["fraction_to_reach_random_best"]
        shown = f"{fraction:.0%}" if math.isfinite(fraction) else "not reached"
        rows.append(
            f"| {run['seed']} | {run['random'][-1][1]:.4f} | {run['grid'][-1][1]:.4f} "
            f"| {run['asha_tpe'][-1][1]:.4f} | {run['asha_tpe_trials']} | **{shown}** "
            f"| {' / '.join(f'{v:.2f}' for v in run.get('early_vs_final', {}).values())} |"
        )
    fractions = sorted(r["fraction_to_reach_random_best"] for r in runs)
    median = fractions[len(fractions) // 2]
    verdict = (
        f"median {median:.0%}: target (at most 25%) met"
        if median <= 0.25
        else f"median {median:.0%}: target (at most 25%) missed by {median - 0.25:.0%}"
        if math.isfinite(median)
        else "ASHA + TPE did not reach random search's best: target missed"
    )
    return f"""
## Search efficiency: ASHA + TPE against random search and a grid (MNIST)

{{measured}} on {machine()}. sweeps/mnist.py's space and base model
(conv) on the first {limit:,} MNIST training images, E = {epochs} epochs. Random search:
{grid_trials} trials x E epochs, FIFO (no early stopping); grid: {points} points per axis
({", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in GRID[points].items())}; likelihood
gaussian_learned, lr 1e-3), E epochs each; both {budget} epochs. ASHA + TPE: trials
proposed by TPE, stopped early by ASHA (grace period 1, reduction factor 3), until the
same {budget} epochs are spent (`--epoch-budget`; the trials running then stop). Epochs are
counted in the order they were reported (2 trials at a time).

{chr(10).join(rows)}

Fraction of random search's epochs ASHA + TPE needed to reach random search's final best:
{verdict}.

ASHA keeps the best third of the trials at each rung (epochs 1 and 3 here); it can reach the
best configurations early only if those epochs rank trials the way epoch E does. The last
column measures that on random search's trials (all trained E epochs): Spearman's rank
correlation of val_bpd after the rung epoch with val_bpd after epoch E (1: the same order).

![best val_bpd against epochs consumed](figures/search_efficiency.png)
"""


if __name__ == "__main__":
    main()
