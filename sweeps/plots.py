"""Pictures of a whole sweep, logged on its parent run as PNG and interactive HTML:
Optuna's optimisation history and parameter importances, and a rate-distortion plot (rate =
val_kl, distortion = val_mse; one point per trial at its best epoch, the best trial marked).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from mlflow.entities import RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

ARTIFACT_PATH = "sweep"


def rate_distortion_points(results, metric: str = "val_bpd") -> list[dict]:
    """One point per trial: its best epoch's rate, distortion and metric, and its params."""
    points = []
    for result in results:
        history = result.metrics_dataframe
        if history is None or metric not in history or history[metric].isna().all():
            continue
        row = history.loc[history[metric].idxmin()]
        points.append(
            {
                "rate": float(row["val_kl"]),
                "distortion": float(row["val_mse"]),
                metric: float(row[metric]),
                "params": dict(result.config),
                "trial": Path(result.path).name,
            }
        )
    return points


def _rate_distortion_png(points: list[dict], best: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    sc = ax.scatter(
        [p["rate"] for p in points],
        [p["distortion"] for p in points],
        c=[p["val_bpd"] for p in points],
        cmap="viridis_r",
        s=30,
    )
    ax.scatter(
        [best["rate"]],
        [best["distortion"]],
        marker="*",
        s=300,
        facecolor="none",
        edgecolor="red",
        linewidth=1.5,
        label=f"best: {best['trial']}",
    )
    fig.colorbar(sc, ax=ax, label="val_bpd (lower is better)")
    ax.set(
        xlabel="rate: val_kl (nats per image)",
        ylabel="distortion: val_mse",
        title="rate-distortion, one point per trial",
        yscale="log",
    )
    ax.legend(loc="upper right")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _rate_distortion_html(points: list[dict], best: dict, path: Path) -> None:
    import plotly.graph_objects as go

    text = [
        "<br>".join(
            [
                p["trial"],
                *(f"{k}={v}" for k, v in p["params"].items()),
                f"val_bpd={p['val_bpd']:.4f}",
            ]
        )
        for p in points
    ]
    fig = go.Figure(
        go.Scatter(
            x=[p["rate"] for p in points],
            y=[p["distortion"] for p in points],
            mode="markers",
            text=text,
            hoverinfo="text",
            marker={
                "color": [p["val_bpd"] for p in points],
                "colorscale": "Viridis_r",
                "showscale": True,
                "colorbar": {"title": "val_bpd"},
                "size": 10,
            },
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
        title="rate-distortion, one point per trial",
        showlegend=False,
        xaxis_title="rate: val_kl (nats per image)",
        yaxis_title="distortion: val_mse",
        yaxis_type="log",
    )
    fig.write_html(path, include_plotlyjs="cdn")


def _optuna_plots(study: optuna.Study, folder: Path) -> list[str]:
    """History and importances, PNG and HTML; returns what could not be drawn and why."""
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
    for name, (static, interactive) in drawings.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" warnings of the mpl backend
                ax = static(study)
                ax.figure.savefig(folder / f"{name}.png", bbox_inches="tight")
                plt.close(ax.figure)
                interactive(study).write_html(folder / f"{name}.html", include_plotlyjs="cdn")
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            skipped.append(f"{name}: {err}")  # e.g. importances need 2+ complete trials
    return skipped


def log_sweep_plots(
    client: MlflowClient, run_id: str, results, study_name: str, study_storage: str | None, best
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        points = rate_distortion_points(results)
        best_point = next((p for p in points if p["trial"] == Path(best.path).name), None)
        if points and best_point:
            _rate_distortion_png(points, best_point, folder / "rate_distortion.png")
            _rate_distortion_html(points, best_point, folder / "rate_distortion.html")
        skipped = []
        if study_storage is not None:  # TPE sweeps have an Optuna study; random ones do not
            study = optuna.load_study(study_name=study_name, storage=study_storage)
            skipped = _optuna_plots(study, folder)
        client.log_artifacts(run_id, str(folder), ARTIFACT_PATH)
    if skipped:
        client.log_batch(run_id, tags=[RunTag("vae_sweep.plots_skipped", "; ".join(skipped))])
