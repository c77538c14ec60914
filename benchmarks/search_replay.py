"""Searchers compared on recorded learning curves: the platform's own TPE searcher
(sweeps.searcher.PruningAwareOptunaSearch) and ASHA (sweeps.tuner.asha) inside a real Ray
Tune run, each trial replaying the curve that benchmarks/curves.py recorded for its config.

    python benchmarks/search_replay.py                  # 20 seeds of every method, both datasets
    python benchmarks/search_replay.py --seeds 3 --method tpe_asha --dataset mnist   # a look

A trial gets the recorded config nearest to what the searcher proposed: the same latent size
and likelihood (the space's choices), the closest kl_weight, sigma_x and lr on the log scale
the space samples them on. Nearest, not a surrogate fitted to the table: every value a
searcher sees is one a real trainer reported, at the cost of a space of a few hundred points
per dataset (a proposal between two recorded configs gets the nearer one's curve). It
reports that curve one epoch per result, as a live trial would; a config that diverged fails
after its last recorded epoch.

Every method has the same budget of epochs: random search's, NUM_TRIALS trials of all
EPOCHS epochs; the methods with ASHA propose trials until the budget is spent (the engine's
--epoch-budget). Trials run CONCURRENT at a time, as on a cluster of that many GPUs. For each
run, the best val_bpd so far after each epoch reported, in the order Tune received them,
gives (a) the share of random search's budget a method needed to reach the final best of
random search with the same seed number, and (b) its regret at the whole budget: its best
minus the best of the whole table. Written to benchmarks/results/search_replay.json,
docs/figures/search_replay.png, the section of docs/BENCHMARKS.md, and MLflow (experiment
search-replay of --tracking-uri: a run per method and dataset with its figures and the plot).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _report import REPO, command, commit, machine, save_json, write_section
from curves import DATASETS, EPOCHS, Curves, cost, replay

sys.path.insert(0, str(REPO / "sweeps"))
import mnist  # noqa: E402  (the search space the curves were recorded on)

from sweeps.searcher import DEFAULT_TPE, TPE  # noqa: E402
from sweeps.spec import DEFAULTS  # noqa: E402

FIGURE = REPO / "docs" / "figures" / "search_replay.png"
EXPERIMENT = "search-replay"
# The searches done so far, a JSON line each: a run cut short goes on from them. Delete it
# after changing the table, a method or this script.
DONE = REPO / "benchmarks" / "results" / "search_replay_runs.jsonl"
NUM_TRIALS = 16  # random search's trials (the engine's default): budget NUM_TRIALS x EPOCHS
CONCURRENT = 8
GRACE = 1  # ASHA's rungs at 1, 3, 9 and 27 epochs
NEVER = 1.12  # where the figure draws a search that never reached random search's best


@dataclass(frozen=True)
class Method:
    label: str
    short: str  # in the figure
    tpe: TPE | None  # None: Tune's random sampling
    asha: bool
    grace: int = GRACE  # ASHA's first rung
    # Ray's own OptunaSearch: a trial ASHA stopped is told as COMPLETE at its last value,
    # where sweeps.searcher tells it as PRUNED (TPE then ranks it below every complete one)
    stock: bool = False


METHODS = {
    "random": Method("random search", "random", None, False),
    "random_asha": Method("random + ASHA", "random + ASHA", None, True),
    "tpe": Method("TPE", "TPE (FIFO)", TPE(), False),
    "tpe_asha": Method("TPE + ASHA (Optuna's defaults)", "TPE + ASHA", TPE(), True),
    "tpe_asha_startup": Method(
        "TPE + ASHA, start-up = half the budget's trials",
        "TPE + ASHA: start-up 8",
        TPE(startup=NUM_TRIALS // 2),
        True,
    ),
    "tpe_asha_multivariate": Method(
        "TPE + ASHA, multivariate", "TPE + ASHA: multivariate", TPE(multivariate=True), True
    ),
    "tpe_asha_liar": Method(
        "TPE + ASHA, constant liar", "TPE + ASHA: constant liar", TPE(constant_liar=True), True
    ),
    "tpe_asha_all": Method(
        "TPE + ASHA, all three",
        "TPE + ASHA: all three",
        TPE(startup=NUM_TRIALS // 2, multivariate=True, constant_liar=True),
        True,
    ),
    "tpe_asha_all_stock": Method(
        "TPE + ASHA, all three, stopped trials told as complete (Ray's OptunaSearch)",
        "TPE + ASHA: all three, Ray's searcher",
        TPE(startup=NUM_TRIALS // 2, multivariate=True, constant_liar=True),
        True,
        stock=True,
    ),
    "tpe_asha_all_grace3": Method(
        "TPE + ASHA, all three, grace period 3",
        "TPE + ASHA: all three, grace 3",
        TPE(startup=NUM_TRIALS // 2, multivariate=True, constant_liar=True),
        True,
        grace=3,
    ),
}


def run(method: Method, curves_ref, seed: int, folder: str) -> tuple[list[float], int]:
    """One search: val_bpd of every epoch reported within the budget, in the order Tune
    received them; and how many trials reported within it."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from sweeps.searcher import make_searcher
    from sweeps.tuner import EpochBudget, asha

    budget = NUM_TRIALS * EPOCHS
    reported: list[tuple[str, float]] = []  # (trial id, val_bpd)

    class Collect(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            reported.append((trial.trial_id, result["val_bpd"]))

    if method.tpe is None:
        searcher = BasicVariantGenerator(random_state=seed, max_concurrent=CONCURRENT)
    else:
        tpe = (
            OptunaSearch(metric="val_bpd", mode="min", sampler=method.tpe.sampler(seed))
            if method.stock
            else make_searcher(f"replay-{seed}", None, seed, EPOCHS, tpe=method.tpe)
        )
        searcher = ConcurrencyLimiter(tpe, max_concurrent=CONCURRENT)
    stopper = EpochBudget(budget) if method.asha else None
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(replay, curves=curves_ref), {"cpu": 1}),
        param_space=dict(mnist.SEARCH_SPACE),
        tune_config=tune.TuneConfig(
            metric="val_bpd",
            mode="min",
            search_alg=searcher,
            scheduler=asha(EPOCHS, method.grace) if method.asha else FIFOScheduler(),
            num_samples=NUM_TRIALS * (20 if method.asha else 1),  # ASHA: until the budget
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"replay-{seed}",
            storage_path=folder,
            verbose=0,
            stop=stopper,
            callbacks=[Collect(), *([stopper] if stopper else [])],
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    tuner.fit()
    spent = reported[:budget]
    return [value for _, value in spent], len({trial for trial, _ in spent})


def default_method() -> str | None:
    """The method that is the engine's default search (DEFAULTS["search"]: random sampling,
    or DEFAULT_TPE), with ASHA at the default grace period."""
    tpe = DEFAULT_TPE if DEFAULTS["search"] == "tpe" else None
    for name, m in METHODS.items():
        if m.asha and not m.stock and m.tpe == tpe and m.grace == DEFAULTS["grace_period"]:
            return name
    return None


def share_to_reach(target: float, reported: list[float], budget: int) -> float:
    """Epochs until the best so far is at most `target`, as a share of `budget` (inf:
    never)."""
    best = math.inf
    for epochs, value in enumerate(reported, 1):
        best = min(best, value)
        if best <= target:
            return epochs / budget
    return math.inf


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """25th, 50th and 75th percentiles, nearest rank (so that `never`, inf, stays inf)."""
    ordered = sorted(values)
    rank = lambda q: ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # noqa: E731
    return rank(0.25), rank(0.5), rank(0.75)


def best_so_far(reported: list[float], length: int) -> np.ndarray:
    out = np.minimum.accumulate(np.array(reported, dtype=float))
    return np.pad(out, (0, length - len(out)), mode="edge") if len(out) < length else out


_CURVES: dict = {}  # in each driver process: dataset -> its Curves in the object store


def _start_driver() -> None:
    """A driver process: its own local Ray, as many CPUs as trials run at once (a replayed
    trial uses next to none)."""
    import ray

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # no result.json per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    ray.init(num_cpus=CONCURRENT, include_dashboard=False, log_to_driver=False)


def _search(dataset: str, name: str, seed: int) -> tuple[list[float], int, float]:
    """One search in this driver: its values, trials and seconds."""
    import ray

    if dataset not in _CURVES:
        _CURVES[dataset] = ray.put(Curves(dataset))
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        values, trials = run(METHODS[name], _CURVES[dataset], seed, folder)
    return values, trials, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="searches per method (default 20)")
    parser.add_argument("--method", action="append", choices=METHODS, help="default: all")
    parser.add_argument("--dataset", action="append", choices=DATASETS, help="default: both")
    parser.add_argument(
        "--drivers",
        type=int,
        default=1,
        help="searches at once, each with its own Ray (default 1: on 2 cores, two take longer)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=f"sqlite:///{Path.cwd() / 'mlflow-bench.db'}",
        help="MLflow store for the summary runs (default ./mlflow-bench.db)",
    )
    args = parser.parse_args()
    methods = args.method or list(METHODS)
    if "random" not in methods:
        methods = ["random", *methods]  # every figure is against random search
    datasets = args.dataset or list(DATASETS)
    # dataset by dataset, seed by seed, every method: a run cut short has whole seeds
    jobs = [(d, m, s) for d in datasets for s in range(args.seeds) for m in methods]
    started = time.monotonic()
    runs: dict[tuple[str, str, int], list[float]] = {}
    trials: dict[tuple[str, str, int], int] = {}
    seconds: dict[tuple[str, str, int], float] = {}
    for line in DONE.read_text().splitlines() if DONE.exists() else []:
        job = json.loads(line)
        key = tuple(job["job"])
        runs[key], trials[key] = job["values"], job["trials"]
        if "seconds" in job:  # not in the first lines this script wrote
            seconds[key] = job["seconds"]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.drivers, spawn, initializer=_start_driver) as pool:
        futures = {pool.submit(_search, *job): job for job in jobs if job not in runs}
        for done, future in enumerate(as_completed(futures), 1):
            job = futures[future]
            runs[job], trials[job], seconds[job] = future.result()
            record = {"job": job, "values": runs[job], "trials": trials[job]}
            with DONE.open("a") as f:
                f.write(json.dumps({**record, "seconds": seconds[job]}) + "\n")
            print(
                f"\r{done}/{len(futures)} searches ({time.monotonic() - started:.0f} s)",
                end="",
                flush=True,
            )
    print()
    typical = float(np.median(list(seconds.values())))  # for a search without its time
    minutes = sum(seconds.get(job, typical) for job in runs) / 60
    report(collect(runs, trials, args.seeds), args.seeds, minutes, args.tracking_uri)


def collect(runs: dict, trials: dict, seeds: int) -> dict:
    """Per dataset, the figures of every method with all `seeds` searches done (this call's
    and earlier ones'), against random search's."""
    results: dict[str, dict] = {}
    for dataset in DATASETS:
        done = [m for m in METHODS if all((dataset, m, s) in runs for s in range(seeds))]
        if "random" not in done:
            continue
        curves = Curves(dataset)
        by_method = {m: [runs[dataset, m, s] for s in range(seeds)] for m in done}
        results[dataset] = summarise(curves, by_method)
        for m in done:
            results[dataset]["methods"][m]["trials"] = quartiles(
                [trials[dataset, m, s] for s in range(seeds)]
            )
        results[dataset]["configs"] = len(curves.ids)
        results[dataset]["best"] = curves.best
        results[dataset]["rank_correlation"] = rank_correlations(curves)
        results[dataset]["survivors"] = survivors(curves)
        results[dataset]["curves"] = {
            name: np.median(
                [best_so_far(r, NUM_TRIALS * EPOCHS) - curves.best for r in rs], axis=0
            ).tolist()
            for name, rs in by_method.items()
        }
    return results


def summarise(curves: Curves, runs: dict[str, list[list[float]]]) -> dict:
    budget = NUM_TRIALS * EPOCHS
    targets = [min(r) for r in runs["random"]]  # random search's final best, seed by seed
    finals = sorted(c[-1] for c in curves.curves if c)
    out = {
        "methods": {},
        # how rare random search's best is: configs of the table at least as good, median seed
        "as_good_as_random": quartiles([sum(f <= t for f in finals) for t in targets])[1],
    }
    for name, rs in runs.items():
        shares = [share_to_reach(t, r, budget) for t, r in zip(targets, rs, strict=True)]
        regrets = [min(r) - curves.best for r in rs]
        halfway = [min(r[: budget // 2]) - curves.best for r in rs]
        out["methods"][name] = {
            "share": quartiles(shares),
            "regret": quartiles(regrets),
            "regret_halfway": quartiles(halfway),
            "shares": shares,
            "regrets": regrets,
        }
    return out


def rank_correlations(curves: Curves) -> dict[int, float]:
    """Spearman's correlation, over the configs trained to the end, of val_bpd after each of
    ASHA's rungs with val_bpd after the last epoch: how well a rung ranks the configs."""
    full = [c for c in curves.curves if len(c) == EPOCHS]
    last = np.argsort(np.argsort([c[-1] for c in full]))
    rungs = [GRACE * 3**k for k in range(5) if GRACE * 3**k < EPOCHS]
    out = {}
    for rung in rungs:
        ranks = np.argsort(np.argsort([c[rung - 1] for c in full]))
        out[rung] = float(np.corrcoef(ranks, last)[0, 1])
    return out


def survivors(curves: Curves, top: int = 6) -> dict[int, int]:
    """Of the `top` configs best after the last epoch, how many rank in the best third after
    each rung's epoch: those that ASHA's cut there keeps, had all configs reached it."""
    full = [c for c in curves.curves if len(c) == EPOCHS]
    best = np.argsort([c[-1] for c in full])[:top]
    out = {}
    for rung in (GRACE * 3**k for k in range(5) if GRACE * 3**k < EPOCHS):
        ranks = np.argsort(np.argsort([c[rung - 1] for c in full]))
        out[rung] = int(sum(ranks[i] < len(full) / 3 for i in best))
    return out


def shown(share: float) -> str:
    return f"{share:.0%}" if math.isfinite(share) else "never"


def report(results: dict, seeds: int, minutes: float, uri: str) -> None:
    """The JSON, the figure, the section of docs/BENCHMARKS.md and the MLflow runs."""
    default = default_method()
    save_json(
        "search_replay",
        {"seeds": seeds, "minutes": minutes, "default": default, "results": results},
    )
    plot(results)
    seconds, configs = cost()
    lines = [
        "## Search replay: TPE and ASHA on recorded learning curves (MNIST, Fashion-MNIST)",
        "",
        f"`{command()}` at commit {commit()} on {machine()}: {minutes:.0f} min.",
        "",
        f"The table (benchmarks/curves/, `python benchmarks/curves.py record`): {configs} "
        f"configs of sweeps/mnist.py's space, each trained {EPOCHS} epochs with vae_core's "
        "trainer (MLP 256-256, batch 128, 4,800 training and 1,200 validation images of each "
        f"dataset), every epoch's val_bpd kept; it took {seconds / 60:.0f} min on this machine, "
        "two configs at a time. Each search below runs in Ray Tune with the platform's own "
        "searcher and scheduler (sweeps.searcher, sweeps.tuner.asha: grace period 1, "
        f"reduction factor 3, rungs at 1, 3, 9 and {EPOCHS} epochs), {CONCURRENT} trials at "
        f"once, on a budget of {NUM_TRIALS} x {EPOCHS} = {NUM_TRIALS * EPOCHS} epochs (random "
        f"search: {NUM_TRIALS} whole trials). A trial replays the recorded config nearest to "
        f"what was proposed (the nearest, not a surrogate fitted to the table: every value a "
        "searcher sees is one the trainer reported; the cost is a space of a few hundred "
        f"points). {seeds} seeds per method; trials: the median number started.",
        "",
        "**Share**: epochs a search needed until its best val_bpd so far was at most the final "
        "best of random search with the same seed number, as a share of the budget (never: "
        "not within it). **Regret**: its best val_bpd at the end of the budget minus the best "
        "of the whole table. Median [first quartile, third quartile] over the seeds.",
    ]
    for dataset, result in results.items():
        lines += [
            "",
            f"**{dataset}** ({result['configs']} configs; best of the table "
            f"{result['best']:.4f} bits/dim; rank correlation of val_bpd at rung epoch with "
            f"epoch {EPOCHS}: "
            + ", ".join(f"{r}: {c:.2f}" for r, c in result["rank_correlation"].items())
            + ")",
            "",
            "| method | share to reach random search's best | reached | regret (bits/dim) "
            "| regret at half the budget | trials |",
            "|---|---|---|---|---|---|",
        ]
        for name, m in result["methods"].items():
            q1, q2, q3 = m["share"]
            r1, r2, r3 = m["regret"]
            h1, h2, h3 = m["regret_halfway"]
            reached = sum(math.isfinite(s) for s in m["shares"])
            label = METHODS[name].label + (" **(the default)**" if name == default else "")
            lines.append(
                f"| {label} | **{shown(q2)}** [{shown(q1)}, {shown(q3)}] "
                f"| {reached}/{len(m['shares'])} | {r2:.4f} [{r1:.4f}, {r3:.4f}] "
                f"| {h2:.4f} [{h1:.4f}, {h3:.4f}] | {m['trials'][1]} |"
            )
        best = min(result["methods"].values(), key=lambda m: m["share"][1])["share"][1]
        kept = ", ".join(f"{n} after epoch {r}" for r, n in result["survivors"].items())
        lines += [
            "",
            f"Random search's final best is as good as the best {result['as_good_as_random']} "
            f"of the {result['configs']} configs in the median seed. Of the 6 configs best "
            f"after epoch {EPOCHS}, the best third of all configs holds {kept}: ASHA's cuts "
            f"keep those. Best median share: {shown(best)}: the target (at most 25%) is "
            + ("met." if best <= 0.25 else "**missed** by every method."),
        ]
    lines += ["", decision(results, default), "", "![median regret against epochs]"
              "(figures/search_replay.png)"]  # fmt: skip
    write_section("search_replay", "\n".join(lines))
    log_to_mlflow(uri, results, seeds)


def decision(results: dict, default: str | None) -> str:
    """The method of least median regret at the full budget, averaged over the datasets (of
    those replayed on every dataset), against the engine's default; and why none meets the
    target."""
    everywhere = set.intersection(*(set(r["methods"]) for r in results.values()))
    regret = {
        name: float(np.mean([r["methods"][name]["regret"][1] for r in results.values()]))
        for name in everywhere
    }
    best = min(regret, key=regret.get)
    ranked = ", ".join(
        f"{METHODS[n].short} {regret[n]:.4f}" for n in sorted(regret, key=regret.get)
    )
    engine = METHODS[default].label if default else "none of these"
    verdict = " (sweeps/spec.py DEFAULTS)." if default == best else ": **not the measured best**."
    join = lambda values: " and ".join(map(str, values))  # noqa: E731
    as_good = join(r["as_good_as_random"] for r in results.values())
    configs = next(iter(results.values()))["configs"]
    correlation = ", ".join(
        f"{next(iter(r['rank_correlation'].values())):.2f}" for r in results.values()
    )
    kept = join(next(iter(r["survivors"].values())) for r in results.values())
    return (
        f"**The default.** Least median regret at the full budget, averaged over "
        f"{join(results)}: {METHODS[best].label} ({ranked}). The engine's default search is "
        f"{engine}{verdict} Why no method needs only a quarter of random search's epochs: at a "
        f"budget of {NUM_TRIALS} trials random search already ends among the best {as_good} "
        f"configs of {configs}, so there is little left to find; the first rung ranks configs "
        f"only partly as the last epoch does (rank correlation {correlation}): ASHA's first "
        f"cut keeps a third of the trials, and the best third at that epoch holds only {kept} "
        "of the 6 best configs; and TPE, whose model starts after 10 trials, steers only the "
        "last few trials of such a budget. What would get there: budgets of many more trials "
        "than the space has distinct good regions, a first rung late enough to rank trials as "
        "the end does (epoch 9 here), or a cheaper fidelity than epochs (a data subset)."
    )


def plot(results: dict) -> None:
    """Per dataset: the median regret of each method against epochs spent (log scale), and
    each seed's share to reach random search's best (bar: the median, when reached)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(2, n, figsize=(6 * n + 2.5, 10), squeeze=False)
    colours = dict(zip(METHODS, plt.get_cmap("tab10").colors, strict=False))
    default = default_method()
    for column, (dataset, result) in enumerate(results.items()):
        top, bottom = axes[0][column], axes[1][column]
        methods = list(result["methods"])
        for name in methods:
            curve = np.asarray(result["curves"][name])
            top.plot(
                np.arange(1, len(curve) + 1),
                curve + 1e-3,
                color=colours[name],
                label=METHODS[name].short,
                lw=2.5 if name in ("random", default) else 1,
            )
        top.set_yscale("log")
        top.set_xlabel("epochs spent")
        top.set_ylabel("median regret + 0.001 (bits/dim)")
        top.set_title(f"{dataset}: best val_bpd so far minus the table's best", fontsize=10)
        top.legend(fontsize=7, loc="upper right")
        for row, name in enumerate(methods):
            figures = result["methods"][name]
            shares = [min(s, NEVER) for s in figures["shares"]]
            jitter = np.linspace(-0.25, 0.25, len(shares))
            bottom.scatter(shares, row + jitter, s=9, color=colours[name])
            if math.isfinite(figures["share"][1]):
                bottom.plot([figures["share"][1]] * 2, [row - 0.4, row + 0.4], color="k", lw=2)
        bottom.axvline(0.25, color="grey", ls="--", lw=1)
        labels = [METHODS[m].short + (" (default)" if m == default else "") for m in methods]
        bottom.set_yticks(range(len(methods)), labels, fontsize=8)
        bottom.set_xlim(0, NEVER + 0.08)
        bottom.set_xticks(
            [0, 0.25, 0.5, 0.75, 1.0, NEVER], ["0", "25%", "50%", "75%", "100%", "never"]
        )
        bottom.set_xlabel("share of random search's epochs to reach its best", fontsize=9)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=100)
    plt.close(fig)


def log_to_mlflow(uri: str, results: dict, seeds: int) -> None:
    """A run per dataset and method with its figures, under a summary run with the plot."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="summary", tags={"commit": commit()}):
        mlflow.log_params(
            {
                "seeds": seeds,
                "budget_epochs": NUM_TRIALS * EPOCHS,
                "concurrent": CONCURRENT,
                "command": command(),
            }
        )
        mlflow.log_artifact(str(FIGURE))
        for dataset, result in results.items():
            for name, m in result["methods"].items():
                with mlflow.start_run(run_name=f"{dataset} {name}", nested=True):
                    mlflow.log_params({"dataset": dataset, "method": METHODS[name].label})
                    finite = {
                        k: v
                        for k, v in zip(("q1", "median", "q3"), m["share"], strict=True)
                        if math.isfinite(v)
                    }
                    mlflow.log_metrics({f"share_{k}": v for k, v in finite.items()})
                    mlflow.log_metrics(
                        dict(
                            zip(
                                ("regret_q1", "regret_median", "regret_q3"),
                                m["regret"],
                                strict=True,
                            )
                        )
                    )
                    mlflow.log_metric("seeds_reaching", sum(map(math.isfinite, m["shares"])))


if __name__ == "__main__":
    main()
