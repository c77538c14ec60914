"""MLflow plumbing shared by the driver and the trials: where the store is, the tag names of
the sweep's layout, the experiment, and calls that wait out (or fail fast through) a tracking
server outage. Which run is opened and ended when is sweeps/lifecycle.py's business.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeps.outbox import transient

ROLE = "vae_sweep.role"  # sweep | trial
SWEEP_NAME = "vae_sweep.sweep_name"
KEPT = "vae_sweep.kept"  # on the parent: the flags a resumed sweep keeps (JSON)
STOP_REASON = "vae_sweep.stop_reason"
ERROR = "vae_sweep.error"
DIVERGED = "vae_sweep.diverged"  # set on a trial run whose loss became NaN/inf
DEVICE = "vae_sweep.device"  # on a trial run: where it trained (cuda:0, cpu, cpu (why))
PARENT = "mlflow.parentRunId"
TRIAL_ID = "ray.trial_id"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
PATIENCE_S = 600  # how long a call waits for the tracking server to come back


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


def create_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The experiment `name`, created unless it exists. Create first and take 'already
    exists' as found: a look-then-create races with another sweep starting at the same time."""
    try:
        return client.create_experiment(name, artifact_location=artifact_root(tracking_uri))
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return client.get_experiment_by_name(name).experiment_id


def log_params(client: MlflowClient, run_id: str, values: dict[str, Any]) -> None:
    params = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in sorted(values.items())]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=params[start : start + 100])


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
