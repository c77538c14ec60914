"""MLflow plumbing shared by the driver and the trials: where the store is, the tag names of
the sweep's layout, the experiment, and calls that wait out (or fail fast through) a tracking
server outage. Which run is opened and ended when is sweeps/lifecycle.py's business.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.multimedia import compress_image_size
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_IMAGES

from sweeps.outbox import transient

ROLE = "vae_sweep.role"  # sweep | trial
SWEEP_NAME = "vae_sweep.sweep_name"
KEPT = "vae_sweep.kept"  # on the parent: the flags a resumed sweep keeps (JSON)
BEST = "vae_sweep.best"  # "true" on the sweep's best trial's run
OUTCOME = "vae_sweep.outcome"  # on a trial run: completed | pruned | stopped | failed | ...
OUTCOMES = "vae_sweep.outcomes"  # on the parent, at the end: {outcome: trials} (JSON)
STOP_REASON = "vae_sweep.stop_reason"
ERROR = "vae_sweep.error"
DIVERGED = "vae_sweep.diverged"  # set on a trial run whose loss became NaN/inf
OUT_OF_MEMORY = "vae_sweep.out_of_memory"  # on a trial run whose model or batch did not fit
RESTARTED = "vae_sweep.restarted"  # on a trial run restarted past a damaged checkpoint
DEVICE = "vae_sweep.device"  # on a trial run: where it trained (cuda:0, cpu, cpu (why))
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"  # a run's description, as the UI shows and edits it
TRIAL_ID = "ray.trial_id"
IMAGES = "images"  # a trial's grids by epoch (stepped_images), what the UI's image charts read
LATEST_GRIDS = "grids"  # a trial's latest grids, at fixed paths: Compare shows them side by side
LOGGED_IMAGES = MLFLOW_LOGGED_IMAGES
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
PATIENCE_S = 600  # how long a call waits for the tracking server to come back


def quiet_downloads() -> None:
    """No "Downloading artifacts" bar on every registry read (a user's own setting wins)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else an SQLite store in the working directory, absolute (Tune
    moves each trial's working directory; a relative sqlite:///mlflow.db would follow it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def uri_flag(uri: str) -> str:
    """` --tracking-uri URI` for a command to print, or "" when `uri` is the default here."""
    return "" if uri == default_tracking_uri() else f" --tracking-uri {uri}"


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


def experiment_tags(dataset: str) -> dict[str, str]:
    """A sweep experiment's description, and the kind that makes MLflow 3's UI open it on its
    training runs (not the GenAI view of traces it shows an experiment without a kind)."""
    return {
        "mlflow.experimentKind": "custom_model_development",
        NOTE: (
            f"VAE hyperparameter sweeps on {dataset} by vae-sweep: one parent run per sweep "
            "(vae_sweep.role = sweep), its trials nested under it. val_bpd is the negative "
            "ELBO at beta = 1 on the validation split in bits per dimension (lower is "
            "better); it chooses the best trial. test_bpd is reported on the test split and "
            "never chooses anything."
        ),
    }


def create_experiment(
    client: MlflowClient, name: str, tracking_uri: str, tags: dict[str, str] | None = None
) -> str:
    """The experiment `name`, created with `tags` unless it exists. Create first and take
    'already exists' as found: a look-then-create races with another sweep starting at the
    same time."""
    try:
        return client.create_experiment(
            name, artifact_location=artifact_root(tracking_uri), tags=tags
        )
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return client.get_experiment_by_name(name).experiment_id


def refusal(err: MlflowException) -> str | None:
    """What to tell the user when the tracking server refused a call: a login it does not
    take (401), or a permission the user lacks (403), which one, and who grants it
    (docker/README.md). None for any other error."""
    status = err.get_http_status_code()
    said = str(err).splitlines()[0][:300]
    if status == 401:
        return (
            f"the tracking server refused the login ({said}); check "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    if status != 403:
        return None
    # MLflow's message: "API request to endpoint /api/2.0/mlflow/runs/create failed with ..."
    endpoint = said.split("endpoint ", 1)[-1].split(" ", 1)[0] if "endpoint " in said else "it"
    if "registered-models" in endpoint or "model-versions" in endpoint:
        needs = "changing a registered model needs EDIT on it (deleting from it, MANAGE)"
    else:
        needs = "logging runs and artifacts needs EDIT on the experiment"
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "this user"
    return (
        f"the tracking server refused {endpoint} to {user} (403 Permission denied): {needs}, "
        f"and {user} may only read it. An admin of the server grants the writer role: "
        f"python docker/team-user.py {user} --role writer (docker/README.md)"
    )


def stepped_images(pngs: list[Path], step: int, into: Path) -> None:
    """Copies of `pngs` in the layout of MlflowClient.log_image(key=..., step=...) (mlflow
    3.x: `<key>+step+<step>+timestamp+<ms>+<uuid>.png` and a `+compressed.webp` thumbnail,
    logged under `images/`, with the run tagged mlflow.loggedImages), so that the UI's image
    charts step through epochs and put trials side by side. Written here, names fixed once,
    so that the Outbox sends them as one folder that a retry cannot duplicate."""
    from PIL import Image

    now = int(time.time() * 1000)
    for png in pngs:
        stem = f"{png.stem}+step+{step}+timestamp+{now}+{uuid.uuid4()}"
        shutil.copyfile(png, into / f"{stem}.png")
        with Image.open(png) as image:
            compress_image_size(image).save(into / f"{stem}+compressed.webp")


def image_step(name: str) -> int | None:
    """The epoch of a file stepped_images wrote (`samples+step+3+timestamp+...png`)."""
    _, mark, rest = name.partition("+step+")
    step = rest.partition("+")[0]
    return int(step) if mark and step.isdigit() else None


def search_all(client: MlflowClient, experiment_ids: list[str], query: str, order=None) -> list:
    """Every run `query` finds, a page of 1,000 at a time (search_runs stops at one page)."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, query, max_results=1000, order_by=order,
                                  page_token=token)  # fmt: skip
        runs += page
        if not (token := page.token):
            return runs


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
