"""The end of a sweep: the best trial (lowest val_bpd, on validation) evaluated on the test
split, registered, the sweep's plots and numbers on its parent run, and the summary printed.

On a cluster the test evaluation, the IWAE bound (k importance samples over the whole test
split) and the final image grids run as a Ray task with a trial's resources: on a worker, on
its GPU when the trials had one, not on the head's CPU where the driver is; the driver only
logs and registers. On a local Ray of the driver's own they run in the driver, with every core
(a task would get one trial's CPUs and a worker to start: 2x slower on 2 cores).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from pyarrow.fs import FileType

from sweeps import comparable, provenance
from sweeps.plots import log_sweep_plots
from sweeps.registry import KEY, Registered, log_and_register
from sweeps.spec import METRIC, SweepSpec
from sweeps.trainable import REPORTED
from vae_core import load_splits, read_checkpoint, viz
from vae_core.checkpoint import CHECKPOINT_NAME, load_model
from vae_core.metrics import final_metrics

BEST_GRIDS = "best"  # the best model's test-split grids, on the sweep's run
# The best epoch's validation numbers a registered version carries (the champion moves on one)
VALIDATION = ("val_bpd", "val_bpd_calibrated", "val_kl", "val_mse", "effective_beta")


@dataclass
class Outcome:
    name: str
    best_params: dict[str, Any]
    best_metrics: dict[str, float]
    test_metrics: dict[str, float]
    registered: Registered
    parent_run_id: str
    tracking_uri: str
    logs: dict[str, int] = field(default_factory=dict)  # late / dropped / pending log calls


def best_checkpoint(results):
    """(result, checkpoint, its metrics) of the lowest-val_bpd checkpoint Tune kept of any
    trial. Chosen among checkpoints, not epochs, so that the registered weights are the ones
    whose val_bpd is reported: a trial whose best epoch's checkpoint was not kept (stopped by
    a budget at that very result, or a killed driver's deletions) competes with what it has."""
    kept = [
        (metrics[METRIC], n, result, checkpoint, metrics)
        for n, result in enumerate(results)
        for checkpoint, metrics in result.best_checkpoints or []
        if math.isfinite(metrics.get(METRIC, math.nan))
        and checkpoint.filesystem.get_file_info(checkpoint.path).type != FileType.NotFound
    ]
    if not kept:
        return None
    _, _, result, checkpoint, metrics = min(kept, key=lambda k: k[:2])
    return result, checkpoint, metrics


def evaluate(checkpoint, gpu: bool, threads: int | None = None) -> dict[str, Any]:
    """test_bpd, the IWAE bound and the grids of a checkpoint, where this runs (a Ray task on a
    cluster's worker, or the driver of a local Ray); and where that was (node, device)."""
    if threads is not None:
        torch.set_num_threads(threads)
    device = "cuda" if gpu and torch.cuda.is_available() else "cpu"
    with checkpoint.as_directory() as folder:
        path = Path(folder) / CHECKPOINT_NAME
        ckpt = read_checkpoint(path)
        model = load_model(path, device)
    data = load_splits(ckpt.config, progress=False)  # the node cache, as the trials read it
    test = final_metrics(model, data.test.images, k=ckpt.config.train.iwae_samples)
    node = ray.get_runtime_context().get_node_id()
    return {**test, "node": node, "device": device, "grids": _grids(model, data.test.images)}


@ray.remote(max_retries=2)
def _evaluate_on_a_worker(checkpoint, cpus: float) -> dict[str, Any]:
    return evaluate(checkpoint, bool(ray.get_gpu_ids()), max(1, math.floor(cpus)))


def _grids(model, images: torch.Tensor, seed: int = 0) -> dict[str, bytes]:
    """The best model's picture, drawn where it was evaluated: test images beside their
    reconstructions, samples from the prior, interpolations between test images (PNG)."""
    with tempfile.TemporaryDirectory() as folder:
        return {
            path.name: path.read_bytes() for path in viz.model_grids(model, images, folder, seed)
        }


def _log_grids(client: MlflowClient, run_id: str, grids: dict[str, bytes]) -> None:
    """The grids under one fixed path, `best/`, on the sweep's run."""
    with tempfile.TemporaryDirectory() as folder:
        for name, png in grids.items():
            (Path(folder) / name).write_bytes(png)
        client.log_artifacts(run_id, folder, BEST_GRIDS)


def finish(
    spec: SweepSpec,
    results,
    parent: str,
    study_db: str | None,
    logs: dict[str, int],
    resources: dict[str, float],
    on_worker: bool,
) -> Outcome:
    """Evaluate, register and draw the best trial of `results` (Tune's ResultGrid): on a
    worker when the sweep runs on a cluster it joined, else in this process."""
    if (found := best_checkpoint(results)) is None:
        errors = "; ".join(str(r.error).splitlines()[-1] for r in results if r.error)[:2000]
        raise RuntimeError(
            f"no trial of sweep {spec.name} kept a checkpoint with a finite {METRIC}: "
            f"{errors or 'none ran'}"
        )
    best, checkpoint, reported = found
    if on_worker:  # a task with a trial's resources: a GPU worker's, not the head's CPU
        task = _evaluate_on_a_worker.options(num_cpus=resources["cpu"], num_gpus=resources["gpu"])
        test = ray.get(task.remote(checkpoint, resources["cpu"]))
    else:  # this machine is the cluster: the driver, with all its cores, needs no worker
        test = evaluate(checkpoint, resources["gpu"] > 0)
    grids = test.pop("grids")
    where = {
        "vae_sweep.evaluated_on": test.pop("node"),
        "vae_sweep.evaluation_device": test.pop("device"),
    }
    with checkpoint.as_directory() as folder:
        path = Path(folder) / CHECKPOINT_NAME
        ckpt = read_checkpoint(path)
        best_record = next(r for r in ckpt.history if r["epoch"] == ckpt.epoch)
        run_id = reported["mlflow_run_id"]
        validation = {k: best_record.get(k) for k in VALIDATION}
        tags = {
            KEY: comparable.key(ckpt.config),
            "dataset": ckpt.config.data.dataset,
            "image_size": str(ckpt.config.image_size),
            "likelihood": ckpt.config.model.likelihood,
            **{k: f"{v:.6g}" for k, v in validation.items() if v is not None},
            "test_bpd": f"{test['test_bpd']:.6f}",  # reported, never compared
            "test_iwae_nll": f"{test['test_iwae_nll']:.4f}",
            "iwae_k": str(test["iwae_k"]),
            "epoch": str(ckpt.epoch),
            "sweep_run_id": parent,
            "trial_run_id": run_id,
            "git_sha": provenance.git_sha(),
            "source_sha256": provenance.source_hash(),
        }
        registered = log_and_register(
            spec.tracking_uri, parent, path, spec.registry_name, tags, METRIC
        )
    client = MlflowClient(spec.tracking_uri)
    now = int(time.time() * 1000)
    client.log_batch(
        parent,
        metrics=[
            Metric(k, float(v), now, 0) for k, v in {**test, METRIC: best_record[METRIC]}.items()
        ],
        tags=[
            RunTag("best_trial_run_id", run_id),
            RunTag("registered_model", f"{spec.registry_name}/{registered.version}"),
            RunTag("registered_alias", registered.alias),
            *(RunTag(k, v) for k, v in where.items()),
        ],
    )
    _log_grids(client, parent, grids)
    log_sweep_plots(client, parent, results, spec.name, study_db, best)
    return Outcome(
        spec.name,
        dict(best.config),
        {k: best_record[k] for k in REPORTED if k in best_record},
        test,
        registered,
        parent,
        spec.tracking_uri,
        logs,
    )


def _log_summary(logs: dict[str, int]) -> list[str]:
    """A line on log calls that waited for the tracking server, if any did."""
    late, dropped = logs.get("mlflow_late", 0), logs.get("mlflow_dropped", 0)
    pending = logs.get("mlflow_pending", 0)
    if not (late or dropped or pending):
        return []
    return [
        f"  tracking     {late} log calls delivered late (server unreachable), {dropped} "
        f"refused and dropped, {pending} undelivered"
    ]


def print_summary(outcome: Outcome, registry_name: str) -> None:
    r, test = outcome.registered, outcome.test_metrics
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in outcome.best_params.items()
    )
    store = outcome.tracking_uri
    browse = (
        f"mlflow ui --backend-store-uri {store}" if store.startswith("sqlite") else f"open {store}"
    )
    stays = f" (champion stays version {r.previous_champion})" if r.alias != "champion" else ""
    lines = [
        f"\nvae-sweep: sweep {outcome.name} done",
        f"  best trial   {params}",
        f"  val_bpd      {outcome.best_metrics[METRIC]:.4f}   test_bpd {test['test_bpd']:.4f}"
        f"   test_iwae_nll {test['test_iwae_nll']:.2f} nats (k={test['iwae_k']})",
        f"  registered   {registry_name} version {r.version} as @{r.alias}{stays}, "
        f"chosen on {METRIC}",
        f"  use it       vae-sweep sample {registry_name}@{r.alias} -n 64 --out s.png",
        f"  browse       {browse}",
        *_log_summary(outcome.logs),
    ]
    print("\n".join(lines))
