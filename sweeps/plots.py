"""Pictures of a whole sweep, logged on its parent run as PNG files and one interactive HTML
page (sweep/plots.html, plotly.js inside):
Optuna's optimisation history and parameter importances, and a rate-distortion plot (rate =
val_kl, distortion = val_mse; one point per trial at its best epoch, coloured by effective
beta, the best trial marked; for --objective rate-distortion each trial's last epoch and the
Pareto front drawn as a staircase).
"""

from __future__ import annotations

import math
import tempfile
import warnings
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from mlflow.entities import RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from ray.tune.result import TRAINING_ITERATION  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from sweeps.searcher import ended_trial  # noqa: E402
from sweeps.space import grid_values  # noqa: E402

ARTIFACT_PATH = "sweep"
PAGE = "plots.html"  # the interactive figures, under ARTIFACT_PATH


def trial_label(result) -> str:
    """`07 z16 beta0.4 sigma0.12 learned`: the trial's run name (sweeps.tuner.TrialNamer),
    else `trial 9ed09191`, its Tune id as its run records it (ray.trial_id)."""
    metrics = result.metrics or {}
    if name := metrics.get("trial_name"):
        return str(name)
    trial_id = metrics.get("trial_id")
    return f"trial {trial_id}" if trial_id else Path(result.path).name


def rate_distortion_points(results, metric: str = "val_bpd", last: bool = False) -> list[dict]:
    """One point per trial, at its best epoch by `metric` (or its last): rate, distortion,
    the bounds, effective beta and its params."""
    points = []
    for result in results:
        history = result.metrics_dataframe
        if history is None or metric not in history or history[metric].isna().all():
            continue
        row = history.iloc[-1] if last else history.loc[history[metric].idxmin()]
        extra = {
            k: float(row[k])
            for k in ("val_bpd_calibrated", "effective_beta")
            if k in row and row[k] == row[k]  # present and not NaN
        }
        points.append(
            {
                "rate": float(row["val_kl"]),
                "distortion": float(row["val_mse"]),
                metric: float(row[metric]),
                **extra,
                "params": {k: v for k, v in dict(result.config).items()},
                "trial": trial_label(result),
            }
        )
    return points


def _colour(points: list[dict]) -> tuple[list[float], str]:
    """Colour by effective beta (what training traded rate against distortion with) where
    every point has it, else by val_bpd."""
    if all(p.get("effective_beta", 0) > 0 for p in points):  # (kl_weight 0 has none)
        return [math.log10(p["effective_beta"]) for p in points], "log10 effective_beta"
    return [p["val_bpd"] for p in points], "val_bpd (lower is better)"


def _spread(points: list[dict]) -> float:
    distortions = [p["distortion"] for p in points]
    return max(distortions) / max(min(distortions), 1e-12)


def _title(members: list[dict]) -> str:
    return (
        "rate-distortion: Pareto front of the sweep"
        if members
        else ("rate-distortion, one point per trial")
    )


def _rate_distortion_png(points: list[dict], best: dict, members: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    colour, label = _colour(points)
    sc = ax.scatter(
        [p["rate"] for p in points],
        [p["distortion"] for p in points],
        c=colour,
        cmap="viridis",
        s=30,
    )
    if members:
        ax.step(
            [p["rate"] for p in members],
            [p["distortion"] for p in members],
            where="post",
            color="black",
            linewidth=1,
            label=f"front ({len(members)} registered)",
        )
    ax.scatter(
        [best["rate"]],
        [best["distortion"]],
        marker="*",
        s=300,
        facecolor="none",
        edgecolor="red",
        linewidth=1.5,
        label=f"{'champion' if members else 'best'}: {best['trial']}",
    )
    fig.colorbar(sc, ax=ax, label=label)
    ax.set(
        xlabel="rate: val_kl (nats per image)",
        ylabel="distortion: val_mse",
        title=_title(members),
        yscale="log" if _spread(points) > 10 else "linear",
    )
    # Below the axes, where it covers no point (bbox_inches="tight" keeps it in the file)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.13), frameon=False)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _hover(point: dict) -> str:
    numbers = [
        f"{k}={point[k]:.4g}"
        for k in ("val_bpd", "val_bpd_calibrated", "effective_beta")
        if k in point
    ]
    return "<br>".join(
        [point["trial"], *(f"{k}={v}" for k, v in point["params"].items()), *numbers]
    )


def _rate_distortion_figure(points: list[dict], best: dict, members: list[dict]):
    import plotly.graph_objects as go

    colour, label = _colour(points)
    fig = go.Figure(
        go.Scatter(
            x=[p["rate"] for p in points],
            y=[p["distortion"] for p in points],
            mode="markers",
            text=[_hover(p) for p in points],
            hoverinfo="text",
            marker={
                "color": colour,
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": label},
                "size": 10,
            },
        )
    )
    if members:
        fig.add_trace(
            go.Scatter(
                x=[p["rate"] for p in members],
                y=[p["distortion"] for p in members],
                mode="lines",
                line={"shape": "hv", "color": "black", "width": 1},
                hoverinfo="skip",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[best["rate"]],
            y=[best["distortion"]],
            mode="markers",
            name="best",
            marker={"symbol": "star-open", "size": 22, "color": "red"},
        )
    )
    fig.update_layout(
        title=_title(members),
        showlegend=False,
        xaxis_title="rate: val_kl (nats per image)",
        yaxis_title="distortion: val_mse",
        yaxis_type="log" if _spread(points) > 10 else "linear",
    )
    return fig


def write_page(figures: dict[str, object], path: Path) -> None:
    """The sweep's interactive figures on one HTML page, plotly.js embedded once: MLflow's
    artifact view shows it offline (a CDN script would leave it blank), 5 MB a sweep."""
    from plotly.offline import get_plotlyjs

    body = "".join(
        f"<h2>{title}</h2>"
        + fig.update_layout(height=520).to_html(full_html=False, include_plotlyjs=False)
        for title, fig in figures.items()
    )
    path.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>vae-sweep</title>'
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f'<body style="font-family: sans-serif">{body}</body></html>',
        encoding="utf-8",
    )


def study_of(results, space: dict, metrics: list[str], modes: list[str], max_epochs: int):
    """A sweep's trials as an in-memory Optuna study, as PruningAwareOptunaSearch would have
    kept them (a trial stopped before max_epochs is PRUNED, with its curve): a random sweep
    has no study, and Optuna's history and importances are drawn from this one."""
    grids = {k: v for k, v in space.items() if grid_values(v) is not None}
    distributions = OptunaSearch.convert_search_space(
        {k: v for k, v in space.items() if k not in grids}
    ) | {k: optuna.distributions.CategoricalDistribution(grid_values(v)) for k, v in grids.items()}
    directions = ["minimize" if m == "min" else "maximize" for m in modes]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(directions=directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    for result in results:
        history = result.metrics_dataframe
        if result.error or history is None or not set(metrics) <= set(history):
            continue
        history = history.dropna(subset=metrics)
        if history.empty:
            continue
        complete = history[TRAINING_ITERATION].iloc[-1] >= max_epochs
        curves = [
            {
                int(i): float(v)
                for i, v in zip(history[TRAINING_ITERATION], history[m], strict=True)
            }
            for m in metrics
        ]
        params = {k: result.config[k] for k in distributions}
        state = TrialState.COMPLETE if complete else TrialState.PRUNED
        study.add_trial(ended_trial(state, curves, params, distributions))
    return study


def _optuna_plots(study: optuna.Study, folder: Path, figures: dict) -> list[str]:
    """History and importances: PNG files in `folder`, interactive figures added to
    `figures`; returns what could not be drawn and why."""
    skipped = []
    drawings = {
        "optimization_history": (
            optuna.visualization.matplotlib.plot_optimization_history,
            optuna.visualization.plot_optimization_history,
        ),
        "param_importances": (
            optuna.visualization.matplotlib.plot_param_importances,
            optuna.visualization.plot_param_importances,
        ),
    }
    if len(study.directions) > 1:  # rate and distortion: Optuna's own view of the front
        names = {"target_names": ["rate: val_kl", "distortion: val_mse"]}
        drawings = {
            "optuna_pareto_front": (
                partial(optuna.visualization.matplotlib.plot_pareto_front, **names),
                partial(optuna.visualization.plot_pareto_front, **names),
            )
        }
    for name, (static, interactive) in drawings.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" warnings of the mpl backend
                ax = static(study)
                ax.figure.savefig(folder / f"{name}.png", bbox_inches="tight")
                plt.close(ax.figure)
                figures[name.replace("_", " ")] = interactive(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            skipped.append(f"{name}: {err}")  # e.g. importances need 2+ complete trials
    return skipped


def log_sweep_plots(
    client: MlflowClient,
    run_id: str,
    results,
    study: optuna.Study,
    best,
    front: list[str] | None = None,
) -> None:
    """The sweep's pictures on its run; `front`: the trials of a rate-distortion sweep's
    Pareto front (its points are then each trial's last epoch, the one registered)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        points = rate_distortion_points(results, last=front is not None)
        best_point = next((p for p in points if p["trial"] == trial_label(best)), None)
        members = [p for name in front or [] for p in points if p["trial"] == name]
        figures, skipped = {}, []
        if points and best_point:
            _rate_distortion_png(points, best_point, members, folder / "rate_distortion.png")
            figures["rate-distortion"] = _rate_distortion_figure(points, best_point, members)
        skipped = _optuna_plots(study, folder, figures)
        if figures:
            write_page(figures, folder / PAGE)
        client.log_artifacts(run_id, str(folder), ARTIFACT_PATH)
    if skipped:
        client.log_batch(run_id, tags=[RunTag("vae_sweep.plots_skipped", "; ".join(skipped))])
