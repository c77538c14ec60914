"""The end of a sweep: the best trial (lowest val_bpd, or the --objective's metric, on
validation) evaluated on the test split, registered, the sweep's plots and numbers on its
parent run, and the summary printed. A rate-distortion sweep registers every member of its
Pareto front (each trial's last checkpoint that no other beats on both val_kl and val_mse) and
makes champion the best val_bpd among them, or the member --pick asks for.

On a cluster the test evaluation, the IWAE bound (k importance samples over the whole test
split) and the final image grids run as a Ray task with a trial's resources: on a worker, on
its GPU when the trials had one, not on the head's CPU where the driver is; the driver only
logs and registers. On a local Ray of the driver's own they run in the driver, with every core
(a task would get one trial's CPUs and a worker to start: 2x slower on 2 cores).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from pyarrow.fs import FileType

from sweeps import comparable, provenance
from sweeps.checkpoints import damage
from sweeps.plots import ARTIFACT_PATH, log_sweep_plots, study_of, trial_label
from sweeps.registry import KEY, Registered, log_and_register, make_champion
from sweeps.spec import DISTORTION, METRIC, RATE, SweepSpec
from sweeps.tracking import BEST, NOTE, uri_flag
from sweeps.trainable import REPORTED
from vae_core import load_splits, read_checkpoint, viz
from vae_core.checkpoint import CHECKPOINT_NAME, load_model
from vae_core.metrics import final_metrics

BEST_GRIDS = "best"  # the best model's test-split grids, on the sweep's run
# The best epoch's validation numbers a registered version carries (the champion moves on one)
VALIDATION = (
    "val_bpd",
    "val_bpd_calibrated",
    "val_kl",
    "val_mse",
    "effective_beta",
    "val_mig",
    "val_shape_accuracy",
    "val_factor_r2",
)


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
    metric: str = METRIC  # what chose it
    front: list[dict[str, Any]] = field(default_factory=list)  # rate-distortion: the members
    note: str = ""  # how the champion was picked, when that needs saying
    best_trial: str = ""  # its run's name
    experiment_id: str = ""
    failed: list[str] = field(default_factory=list)  # `<trial>: <why>`, one per failed trial


@dataclass
class Candidate:
    """A trial's kept checkpoint that the sweep may register, with the metrics it reported."""

    result: Any  # Tune's Result
    checkpoint: Any  # tune.Checkpoint
    metrics: dict[str, Any]

    @property
    def trial(self) -> str:
        return trial_label(self.result)


def _exists(checkpoint) -> bool:
    return checkpoint.filesystem.get_file_info(checkpoint.path).type != FileType.NotFound


def _usable(checkpoint) -> bool:
    """Still stored, and its file whole: one cut short (a trial restarted past it) is passed
    over, saying so, instead of failing the sweep's end when it reads it."""
    if not _exists(checkpoint):
        return False
    if (why := damage(checkpoint)) is None:
        return True
    print(f"vae-sweep: {why}; passed over", file=sys.stderr)
    return False


def best_checkpoint(results, metric: str = METRIC, mode: str = "min") -> Candidate | None:
    """The best (`mode` min or max) `metric` checkpoint Tune kept of any trial. Chosen among
    checkpoints, not epochs, so that the registered weights are the ones whose metric is
    reported: a trial whose best epoch's checkpoint was not kept (stopped by a budget at that
    very result, or a killed driver's deletions) competes with what it has. Only the best
    are opened, until one is usable: not a file read (or a download) per trial."""
    sign = -1 if mode == "max" else 1
    kept = [
        Candidate(result, checkpoint, metrics)
        for result in results
        for checkpoint, metrics in result.best_checkpoints or []
        if math.isfinite(metrics.get(metric, math.nan))
    ]
    kept.sort(key=lambda c: sign * c.metrics[metric])  # stable: a tie goes to the first trial
    return next((c for c in kept if _usable(c.checkpoint)), None)


def pareto_front(results) -> list[Candidate]:
    """The trials whose last checkpoint no other trial beats on both rate and distortion (the
    non-dominated set, minimising val_kl and val_mse), by increasing rate."""
    last = []
    for result in results:
        kept = [
            (int(m.get("epoch", 0)), Candidate(result, c, m))
            for c, m in result.best_checkpoints or []
            if all(math.isfinite(m.get(k, math.nan)) for k in (RATE, DISTORTION, METRIC))
            and _usable(c)
        ]
        if kept:
            last.append(max(kept, key=lambda k: k[0])[1])
    members = non_dominated([(c.metrics[RATE], c.metrics[DISTORTION]) for c in last])
    return [last[i] for i in members]


def non_dominated(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point matches or beats on both coordinates (both
    minimised; of equal points the first), by increasing first coordinate."""
    order = sorted(range(len(points)), key=lambda i: (points[i], i))
    front, lowest = [], math.inf
    for i in order:  # by rate: a member has less distortion than every point of lower rate
        if points[i][1] < lowest:
            front.append(i)
            lowest = points[i][1]
    return front


def pick(front: list[Candidate], max_rate: float | None) -> tuple[Candidate, str]:
    """The front's champion: the lowest distortion with val_kl <= max_rate, else the best
    val_bpd; and how it was picked."""
    if max_rate is None:
        return min(front, key=lambda c: c.metrics[METRIC]), ""
    within = [c for c in front if c.metrics[RATE] <= max_rate]
    if not within:
        lowest = front[0]
        return lowest, (
            f"no member has val_kl <= {max_rate:g}; picked the lowest rate, "
            f"{lowest.metrics[RATE]:.3g} nats"
        )
    chosen = min(within, key=lambda c: c.metrics[DISTORTION])
    return chosen, f"lowest val_mse with val_kl <= {max_rate:g} (--pick max-rate={max_rate:g})"


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


def _evaluate_all(
    candidates: list[Candidate], resources: dict[str, float], on_worker: bool
) -> list[dict[str, Any]]:
    """Each candidate's test numbers: as Ray tasks with a trial's resources (GPU workers, not
    the head's CPU; a front's members at once), or one by one in this process."""
    if not on_worker:  # this machine is the cluster: the driver, with all its cores
        return [evaluate(c.checkpoint, resources["gpu"] > 0) for c in candidates]
    task = _evaluate_on_a_worker.options(num_cpus=resources["cpu"], num_gpus=resources["gpu"])
    return ray.get([task.remote(c.checkpoint, resources["cpu"]) for c in candidates])


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


def _best_record(candidate: Candidate) -> tuple[Any, dict[str, Any]]:
    """The checkpoint's config and its epoch's record (what the trial reported then)."""
    with candidate.checkpoint.as_directory() as folder:
        ckpt = read_checkpoint(Path(folder) / CHECKPOINT_NAME)
    return ckpt, next(r for r in ckpt.history if r["epoch"] == ckpt.epoch)


def _register(
    spec: SweepSpec, parent: str, candidate: Candidate, test: dict[str, Any], front: bool
) -> Registered:
    """One version of spec.registry_name: the candidate's weights, its key, its validation
    numbers (the champion moves on those) and its test numbers (reported only)."""
    with candidate.checkpoint.as_directory() as folder:
        path = Path(folder) / CHECKPOINT_NAME
        ckpt = read_checkpoint(path)
        record = next(r for r in ckpt.history if r["epoch"] == ckpt.epoch)
        tags = {
            KEY: comparable.key(ckpt.config),
            "dataset": ckpt.config.data.dataset,
            "image_size": str(ckpt.config.image_size),
            "likelihood": ckpt.config.model.likelihood,
            **{k: f"{record[k]:.6g}" for k in VALIDATION if record.get(k) is not None},
            "test_bpd": f"{test['test_bpd']:.6f}",  # reported, never compared
            "test_iwae_nll": f"{test['test_iwae_nll']:.4f}",
            "iwae_k": str(test["iwae_k"]),
            "epoch": str(ckpt.epoch),
            "sweep_run_id": parent,
            "trial_run_id": candidate.metrics["mlflow_run_id"],
            "vae_sweep.objective": spec.objective,
            "git_sha": provenance.git_sha(),
            "source_sha256": provenance.source_hash(),
        }
        if front:
            tags["vae_sweep.front"] = (
                f"rate {record[RATE]:.4g}, distortion {record[DISTORTION]:.4g}"
            )
        return log_and_register(
            spec.tracking_uri,
            candidate.metrics["mlflow_run_id"],  # the version's source: the trial's run
            path,
            spec.registry_name,
            tags,
            spec.metric,
            spec.mode,
            partial(version_description, spec, candidate, record, test, tags[KEY]),
        )


def version_description(
    spec: SweepSpec, candidate: Candidate, record: dict, test: dict, key: str, version: str
) -> str:
    """A model version's description: what trained it, its numbers, its key, how to pull it."""
    chosen = f"{spec.metric} {record[spec.metric]:.4f}"
    if spec.metric != METRIC:
        chosen += f", val_bpd {record[METRIC]:.4f}"
    return (
        f"Trial {candidate.trial} of sweep {spec.name}, epoch {record['epoch']}. "
        f"Validation (what chose it): {chosen}. Test (reported, never compared): "
        f"test_bpd {test['test_bpd']:.4f}, IWAE bound {test['test_iwae_nll']:.2f} nats "
        f"(k={test['iwae_k']}). Comparable with versions of key {key}. "
        f"Pull it: vae-sweep pull {spec.registry_name}/{version} --out model/"
        f"{uri_flag(spec.tracking_uri)}"
    )


def finish(
    spec: SweepSpec,
    results,
    parent: str,
    study_db: str | None,
    logs: dict[str, int],
    resources: dict[str, float],
    on_worker: bool,
) -> Outcome:
    """Evaluate, register and draw the best trial of `results` (Tune's ResultGrid), or with
    --objective rate-distortion every member of the Pareto front: on workers when the sweep
    runs on a cluster it joined, else in this process."""
    if spec.multi_objective:
        members = pareto_front(results)
        chosen, note = pick(members, spec.max_rate) if members else (None, "")
    else:
        chosen, note = best_checkpoint(results, spec.metric, spec.mode), ""
        members = [chosen] if chosen else []
    if chosen is None:
        errors = "; ".join(str(r.error).splitlines()[-1] for r in results if r.error)[:2000]
        wanted = f"{RATE} and {DISTORTION}" if spec.multi_objective else spec.metric
        raise RuntimeError(
            f"no trial of sweep {spec.name} kept a checkpoint with a finite {wanted}: "
            f"{errors or 'none ran'}"
        )
    tests = _evaluate_all(members, resources, on_worker)
    registered = {
        c.trial: _register(spec, parent, c, t, spec.multi_objective)
        for c, t in zip(members, tests, strict=True)
    }
    mine = registered[chosen.trial]
    if spec.max_rate is not None:  # the user's pick, on validation numbers
        mine = make_champion(spec.tracking_uri, spec.registry_name, mine.version, note)
    test = dict(tests[members.index(chosen)])
    grids = test.pop("grids")
    where = {
        "vae_sweep.evaluated_on": test.pop("node"),
        "vae_sweep.evaluation_device": test.pop("device"),
    }
    _, best_record = _best_record(chosen)
    run_id = chosen.metrics["mlflow_run_id"]
    client = MlflowClient(spec.tracking_uri)
    now = int(time.time() * 1000)
    # best_<metric>, not <metric>: a sort of the runs table by val_bpd finds only trials
    shown = {**test, f"best_{spec.metric}": best_record[spec.metric]}
    if spec.metric != METRIC:
        shown[f"best_{METRIC}"] = best_record[METRIC]
    client.log_batch(
        parent,
        metrics=[Metric(k, float(v), now, 0) for k, v in shown.items()],
        tags=[
            RunTag("best_trial_run_id", run_id),
            RunTag("registered_model", f"{spec.registry_name}/{mine.version}"),
            RunTag("registered_alias", mine.alias),
            *(RunTag(k, v) for k, v in where.items()),
            *([RunTag("vae_sweep.picked", note)] if note else []),
        ],
    )
    _mark_best(client, run_id, spec, best_record, mine)
    front = []
    if spec.multi_objective:
        front = _front_table(members, tests, registered)
        client.log_table(parent, _columns(front), f"{ARTIFACT_PATH}/pareto_front.json")
    _log_grids(client, parent, grids)
    study = (  # TPE's own, or the trials of a random sweep as a study
        optuna.load_study(study_name=spec.name, storage=study_db)
        if study_db
        else study_of(results, dict(spec.space), spec.searched, spec.modes, spec.max_epochs)
    )
    log_sweep_plots(
        client,
        parent,
        results,
        study,
        chosen.result,
        [c.trial for c in members] if spec.multi_objective else None,
    )
    return Outcome(
        spec.name,
        dict(chosen.result.config),
        {k: best_record[k] for k in REPORTED if best_record.get(k) is not None},
        test,
        mine,
        parent,
        spec.tracking_uri,
        logs,
        spec.metric,
        front,
        note,
        chosen.trial,
        client.get_run(parent).info.experiment_id,
    )


def _mark_best(client: MlflowClient, run_id: str, spec: SweepSpec, record: dict, mine) -> None:
    """The best trial's run says so: tag vae_sweep.best, and its description starts with it."""
    run = client.get_run(run_id)
    said = run.data.tags.get(NOTE, "")
    best = (
        f"Best trial of sweep {spec.name} ({spec.metric} {record[spec.metric]:.4f} at epoch "
        f"{record['epoch']}): registered as {spec.registry_name} version {mine.version}, "
        f"@{mine.alias}."
    )
    client.log_batch(
        run_id,
        tags=[RunTag(BEST, "true"), RunTag(NOTE, f"{best}\n{said}" if said else best)],
    )


def _front_table(members, tests, registered) -> list[dict[str, Any]]:
    """One row per member of the front: its trial, rate, distortion, bounds and version."""
    rows = []
    for candidate, test in zip(members, tests, strict=True):
        m = candidate.metrics
        rows.append(
            {
                "trial": candidate.trial,
                "val_kl": m[RATE],
                "val_mse": m[DISTORTION],
                "val_bpd": m[METRIC],
                "val_bpd_calibrated": m.get("val_bpd_calibrated"),
                "effective_beta": m.get("effective_beta"),
                "test_bpd": test["test_bpd"],
                **{k: v for k, v in candidate.result.config.items()},
                "version": registered[candidate.trial].version,
            }
        )
    return rows


def _columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    names = list(dict.fromkeys(k for row in rows for k in row))
    return {name: [row.get(name) for row in rows] for name in names}


OUTCOME_WORDS = {"pruned": "pruned by ASHA", "stopped": "stopped by a budget or the end"}


def sweep_description(outcome: Outcome, counts: dict[str, int], command: str) -> str:
    """The parent run's description, two lines: the sweep (trials by outcome, the command)
    and its best (trial, validation number, registered version, test number)."""
    total = sum(counts.values())
    parts = ", ".join(f"{n} {OUTCOME_WORDS.get(what, what)}" for what, n in counts.items())
    r, best = outcome.registered, outcome.best_metrics
    failed = "".join(f"\nFailed: {line}" for line in outcome.failed)
    return (
        f"Sweep {outcome.name}: {total} trials ({parts}) of `{command}`.\n"
        f"Best: trial {outcome.best_trial}, {outcome.metric} {best[outcome.metric]:.4f} on "
        f"validation; registered as {r.name} version {r.version} (@{r.alias}); test_bpd "
        f"{outcome.test_metrics['test_bpd']:.4f} (reported only).{failed}"
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
    # The runs page: MLflow 3's UI starts in its GenAI view, which shows no runs
    page = f"/#/experiments/{outcome.experiment_id}/runs?workflowType=machine_learning"
    browse = (
        f"mlflow ui --backend-store-uri {store}, then http://127.0.0.1:5000{page}"
        if store.startswith("sqlite")
        else f"{store.rstrip('/')}{page}"
    )
    stays = f" (champion stays version {r.previous_champion})" if r.alias != "champion" else ""
    best = outcome.best_metrics
    chosen = f"{outcome.metric:<12} {best[outcome.metric]:.4f}"
    if outcome.metric != METRIC:
        chosen += f"   val_bpd {best[METRIC]:.4f}"
    lines = [
        f"\nvae-sweep: sweep {outcome.name} done",
        f"  {'picked' if outcome.front else 'best trial':<12} {params}",
        f"  {chosen}   test_bpd {test['test_bpd']:.4f}"
        f"   test_iwae_nll {test['test_iwae_nll']:.2f} nats (k={test['iwae_k']})",
        *_front_lines(outcome.front),
        f"  registered   {registry_name} version {r.version} as @{r.alias}{stays}, "
        f"chosen on {outcome.note or outcome.metric}",
        f"  use it       vae-sweep sample {registry_name}@{r.alias} -n 64 --out s.png"
        f"{uri_flag(store)}",
        f"  browse       {browse}",
        *_log_summary(outcome.logs),
        *(f"  failed       {line[:600]}" for line in outcome.failed),
    ]
    print("\n".join(lines))


def _front_lines(front: list[dict[str, Any]]) -> list[str]:
    """The Pareto front, one member a line, by increasing rate."""
    if not front:
        return []
    lines = [f"  front        {len(front)} members (rate val_kl nats, distortion val_mse):"]
    lines += [
        f"    version {row['version']:>4}  rate {row['val_kl']:8.3f}  distortion "
        f"{row['val_mse']:.5f}  val_bpd {row['val_bpd']:.4f}  {row['trial']}"
        for row in front
    ]
    return lines
