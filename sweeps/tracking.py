"""MLflow layout of a sweep: one parent run, one nested child run per trial, none left RUNNING.

Trials log from their own process through MlflowClient (no fluent global state): params once,
each epoch's metrics in one batched call, image grids every few epochs. The child run's id is
kept in the trial's checkpoint, so a trial restored after a failure continues its own run.
A trial that ASHA stops, or that fails, cannot end its run itself: `CloseTrialRuns`, a Tune
callback on the driver, ends it (KILLED or FAILED, with the reason as a tag).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from sweeps.outbox import Outbox, transient

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


def get_or_create_experiment(
    client: MlflowClient, name: str, tracking_uri: str, create: bool = True
) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if not create:
        raise ValueError(
            f"--resume: no experiment '{name}' in {tracking_uri}; check --experiment and "
            "--tracking-uri"
        )
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


OUTBOX_DELIVERED = "vae_sweep.outbox_delivered"  # the checkpoint whose outbox the driver sent
PATIENCE_S = 600  # how long a trial waits for the tracking server to open its run


def patiently(what: str, call, *args, timeout: float = PATIENCE_S):
    """call(*args), retried with backoff while the tracking server is away (up to
    `timeout` s); `what` names the wait in the message."""
    deadline, pause = time.monotonic() + timeout, 1.0
    while True:
        try:
            return call(*args)
        except Exception as err:
            if not transient(err) or time.monotonic() + pause > deadline:
                raise
            print(f"vae-sweep: {what}: tracking server unreachable, retrying in {pause:.0f} s")
            time.sleep(pause)
            pause = min(2 * pause, 30.0)


class TrialRun:
    """A trial's child run: continued when the trial restarts (its id from the checkpoint,
    else found by the trial's id under the same parent: a trial that died before its first
    checkpoint), created otherwise. `tags` are set either way (e.g. the new worker's pid);
    `self.tags` are those a continued run had already. Opening the run waits for the server;
    later calls go through an Outbox and never stop training."""

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
        self.run_id, self.tags = patiently(
            f"trial {name}",
            self._open,
            *(experiment_id, parent_run_id, run_id, name, trial_id, tags, params),
        )
        self.outbox = Outbox(self.client, self.run_id, Path(tempfile.mkdtemp(prefix="outbox-")))

    def _open(self, experiment_id, parent_run_id, run_id, name, trial_id, tags, params):
        run_id = run_id or self._find(experiment_id, parent_run_id, trial_id)
        if run_id is not None:
            known = self.client.get_run(run_id).data.tags
            self.client.update_run(run_id, status="RUNNING")  # restarted after a failure
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            return run_id, known
        run = self.client.create_run(
            experiment_id,
            run_name=name,
            tags={ROLE: "trial", PARENT: parent_run_id, "mlflow.runName": name, **tags},
        )
        log_params(self.client, run.info.run_id, params)
        return run.info.run_id, {}

    def restore_outbox(self, folder: Path) -> None:
        """Take over what the checkpoint in `folder` had not yet delivered."""
        self.outbox = Outbox.load(folder, self.client, self.run_id, self.outbox.spool)

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
        self.outbox.log_metrics(batch)

    def log_files(self, folder: Path, artifact_path: str) -> None:
        self.outbox.log_artifacts(folder, artifact_path)

    def end(self, status: str = "FINISHED", tags: dict[str, str] | None = None) -> None:
        """End the run; with the server away the driver ends it later (`settle`)."""
        try:
            self.outbox.flush()
            if tags:
                self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            self.client.set_terminated(self.run_id, status)
        except Exception as err:
            if not transient(err):
                raise


def end_if_running(client: MlflowClient, run_id: str, status: str, tags: dict[str, str]) -> bool:
    """End `run_id` with `status` unless it already ended; True if this call ended it."""
    run = client.get_run(run_id)
    if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
        return False
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(run_id, status)
    return True


def trial_outcome(
    trial, max_epochs: int, budget_spent: bool = False
) -> tuple[str, dict[str, str]]:
    """The MLflow status (and reason tags) of an ended Tune trial; budget_spent: the sweep's
    epoch budget had run out when it ended."""
    epoch = (trial.last_result or {}).get("epoch", 0)
    if trial.status == "ERROR":
        return "FAILED", {ERROR: error_text(trial)}
    if epoch >= max_epochs:
        return "FINISHED", {}
    return "KILLED", {STOP_REASON: stop_reason(epoch, budget_spent)}


def stop_reason(epoch: int, budget_spent: bool = False) -> str:
    """Why a trial ended before its last epoch."""
    if epoch == 0:
        return "stopped before its first epoch ended"
    if budget_spent:
        return f"stopped after epoch {epoch}: the sweep's epoch budget was spent"
    return f"stopped early by ASHA after epoch {epoch}"


def deliver_outbox(client: MlflowClient, run_id: str, checkpoint) -> dict[str, int]:
    """Send what a trial's last checkpoint still carried for its run; the totals of its
    late, dropped and still pending log calls. Once per checkpoint: a tag on the run says
    which was delivered, with the totals."""
    if checkpoint is None:
        return {"mlflow_pending": 0, "mlflow_late": 0, "mlflow_dropped": 0}
    done = client.get_run(run_id).data.tags.get(OUTBOX_DELIVERED)
    if done and json.loads(done)["checkpoint"] == checkpoint.path:
        return json.loads(done)["counters"]
    spool = Path(tempfile.mkdtemp(prefix="outbox-"))
    try:
        with checkpoint.as_directory() as folder:
            box = Outbox.load(Path(folder), client, run_id, spool)
        box.flush()
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    counters = box.counters()
    if not box.pending:
        note = json.dumps({"checkpoint": checkpoint.path, "counters": counters})
        client.set_tag(run_id, OUTBOX_DELIVERED, note)
    return counters


def settle_trial(client: MlflowClient, trial, status: str, tags: dict[str, str]):
    """Deliver an ended trial's outbox, then end its run; its log counters (None: no run)."""
    run_id = (trial.last_result or {}).get("mlflow_run_id")
    if not run_id:
        return None
    counters = deliver_outbox(client, run_id, trial.checkpoint)
    end_if_running(client, run_id, status, tags)
    return counters


@contextmanager
def failing_fast() -> Iterator[None]:
    """MLflow calls that give up at once instead of retrying for minutes: for the driver's
    Tune callbacks, which would stall every trial's reports while they wait."""
    before = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = before


class CloseTrialRuns(tune.Callback):
    """Ends the child runs of trials, which cannot do it themselves: Tune stops a trial as
    soon as it reports its last epoch (ASHA's max_t) or ASHA stops it early, and a failed
    trial may be gone. FINISHED, KILLED (stopped early) or FAILED, with the reason as a tag,
    after delivering what the trial could not log. With the tracking server away, nothing
    waits: the sweep's end (`settle_trial` again) does it."""

    def __init__(self, tracking_uri: str, max_epochs: int, budget=None) -> None:
        self.tracking_uri, self.max_epochs = tracking_uri, max_epochs
        self.budget = budget  # the sweep's EpochBudget, if it has one

    def _settle(self, trial, status: str, tags: dict[str, str]) -> None:
        try:
            with failing_fast():
                settle_trial(MlflowClient(self.tracking_uri), trial, status, tags)
        except Exception as err:
            if not transient(err):
                raise
            print(f"vae-sweep: tracking server unreachable; {trial} is settled at the end")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        spent = self.budget is not None and self.budget.stop_all()
        self._settle(trial, *trial_outcome(trial, self.max_epochs, spent))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._settle(trial, "FAILED", {ERROR: error_text(trial)})


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
