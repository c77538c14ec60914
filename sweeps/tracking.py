"""MLflow layout of a sweep: one parent run, one nested child run per trial, none left RUNNING.

Trials log from their own process through MlflowClient (no fluent global state): params once,
each epoch's metrics in one batched call, image grids every few epochs. The child run's id is
kept in the trial's checkpoint, so a trial restored after a failure continues its own run.
A trial that ASHA stops, or that fails, cannot end its run itself: `CloseTrialRuns`, a Tune
callback on the driver, ends it (KILLED or FAILED, with the reason as a tag).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

ROLE = "vae_sweep.role"
SWEEP_NAME = "vae_sweep.sweep_name"
STOP_REASON = "vae_sweep.stop_reason"
ERROR = "vae_sweep.error"
DIVERGED = "vae_sweep.diverged"  # set on a trial run whose loss became NaN/inf
PARENT = "mlflow.parentRunId"
TRIAL_ID = "ray.trial_id"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else an SQLite store in the working directory, absolute (Tune
    moves each trial's working directory; a relative sqlite:///mlflow.db would follow it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def absolute_tracking_uri(uri: str) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    if "://" not in uri:  # a bare path: MLflow would take it as a file store, which 3.x refuses
        raise ValueError(
            f"--tracking-uri {uri!r}: expected sqlite:///PATH, "
            "postgresql://..., or http(s)://server"
        )
    return uri


def artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment's artifacts go for a local SQLite store: beside the database,
    absolute. None for a server, which decides (--serve-artifacts)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def get_or_create_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_root(tracking_uri))


def _params(values: dict[str, Any]) -> list[Param]:
    return [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in sorted(values.items())]


def log_params(client: MlflowClient, run_id: str, values: dict[str, Any]) -> None:
    params = _params(values)
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=params[start : start + 100])


def find_sweep_run(client: MlflowClient, experiment_id: str, sweep_name: str) -> str | None:
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{ROLE}` = 'sweep' and tags.`{SWEEP_NAME}` = '{sweep_name}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def start_sweep_run(
    client: MlflowClient,
    experiment_id: str,
    sweep_name: str,
    params: dict[str, Any],
    tags: dict[str, str],
    resume: bool,
) -> str:
    """The sweep's parent run: created, or found again when the sweep resumes."""
    run_id = find_sweep_run(client, experiment_id, sweep_name)
    if resume:
        if run_id is None:
            raise ValueError(
                f"--resume: no MLflow run of a sweep named '{sweep_name}' in this "
                "experiment; check --name, --experiment and --tracking-uri"
            )
        client.update_run(run_id, status="RUNNING")
        return run_id
    if run_id is not None:
        raise ValueError(
            f"--name {sweep_name}: a sweep of that name exists already; pass "
            "--resume to continue it, or choose another name"
        )
    run = client.create_run(
        experiment_id, run_name=sweep_name, tags={ROLE: "sweep", SWEEP_NAME: sweep_name, **tags}
    )
    log_params(client, run.info.run_id, params)
    return run.info.run_id


class TrialRun:
    """A trial's child run: continued when the trial restarts (its id from the checkpoint,
    else found by the trial's id under the same parent: a trial that died before its first
    checkpoint), created otherwise. `tags` are set either way (e.g. the new worker's pid)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        run_id: str | None,
        name: str,
        trial_id: str,
        tags: dict[str, str],
        params: dict[str, Any],
    ) -> None:
        self.client = MlflowClient(tracking_uri)
        tags = {TRIAL_ID: trial_id, **tags}
        run_id = run_id or self._find(experiment_id, parent_run_id, trial_id)
        if run_id is not None:
            self.run_id = run_id
            self.tags = self.client.get_run(run_id).data.tags
            self.client.update_run(run_id, status="RUNNING")  # restarted after a failure
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            return
        run = self.client.create_run(
            experiment_id,
            run_name=name,
            tags={ROLE: "trial", PARENT: parent_run_id, "mlflow.runName": name, **tags},
        )
        self.run_id, self.tags = run.info.run_id, {}
        log_params(self.client, self.run_id, params)

    def _find(self, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
        runs = self.client.search_runs(
            [experiment_id],
            f"tags.`{PARENT}` = '{parent_run_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_files(self, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def end(self, status: str = "FINISHED", tags: dict[str, str] | None = None) -> None:
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(self.run_id, status)


def end_if_running(client: MlflowClient, run_id: str, status: str, tags: dict[str, str]) -> bool:
    """End `run_id` with `status` unless it already ended; True if this call ended it."""
    run = client.get_run(run_id)
    if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
        return False
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(run_id, status)
    return True


class CloseTrialRuns(tune.Callback):
    """Ends the child runs of trials, which cannot do it themselves: Tune stops a trial as
    soon as it reports its last epoch (ASHA's max_t) or ASHA stops it early, and a failed
    trial may be gone. FINISHED, KILLED (stopped early) or FAILED, with the reason as a tag."""

    def __init__(self, tracking_uri: str, max_epochs: int) -> None:
        self.tracking_uri, self.max_epochs = tracking_uri, max_epochs

    def _client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result = trial.last_result or {}
        run_id, epoch = result.get("mlflow_run_id"), result.get("epoch", 0)
        if not run_id:
            return
        if epoch >= self.max_epochs:
            end_if_running(self._client(), run_id, "FINISHED", {})
        else:
            reason = f"stopped early by ASHA after epoch {epoch}"
            end_if_running(self._client(), run_id, "KILLED", {STOP_REASON: reason})

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = (trial.last_result or {}).get("mlflow_run_id")
        if run_id:
            end_if_running(self._client(), run_id, "FAILED", {ERROR: error_text(trial)})


def error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    text = Path(path).read_text() if path and Path(path).exists() else "unknown error"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else text)[:5000]


def end_runs(
    client: MlflowClient, run_ids: Iterable[str], status: str, tags: dict[str, str]
) -> int:
    """End every listed run still RUNNING (e.g. after an interrupted sweep)."""
    return sum(end_if_running(client, run_id, status, tags) for run_id in run_ids)
