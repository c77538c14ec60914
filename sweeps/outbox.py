"""A trial's MLflow logging that outlives a tracking-server outage.

A log call that fails for want of the server (no connection, 5xx, 429) is kept: metric batches
in memory, image folders copied to a spool folder, in order. Every later call first sends what
is waiting, so the points arrive late but complete and in order. The trial's checkpoint carries
what is still waiting (`save`), so a restored trial picks it up (`load`) and the driver delivers
what a trial left behind when Tune stopped it. A call the server refuses outright (4xx: it
would never succeed) is dropped and counted; nothing is dropped silently.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

FOLDER = "mlflow_outbox"  # in a checkpoint folder: pending.json + the spooled image folders


def transient(err: BaseException) -> bool:
    """True for failures that waiting can cure: no connection, server errors, throttling."""
    if isinstance(err, MlflowException):
        status = err.get_http_status_code()
    elif getattr(err, "response", None) is not None:  # requests' HTTPError: an artifact upload
        status = err.response.status_code
    else:
        return isinstance(err, OSError)  # requests' ConnectionError and timeouts are OSErrors
    return status >= 500 or status == 429


class Outbox:
    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self.pending: list[dict[str, Any]] = []
        self.late = 0  # calls that waited for the server and then got through
        self.dropped = 0  # calls the server refused: counted, never retried
        self._spool: Path | None = None  # copies of image folders waiting to be sent

    @property
    def spool(self) -> Path:
        """The folder of spooled image folders, made when first needed, removed once empty
        (and when the outbox is collected or the process exits)."""
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix="outbox-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._spool, True)
        return self._spool

    def close(self) -> None:
        """Remove the spool folder; what is pending stays in the checkpoints that carry it."""
        if self._spool is not None:
            self._cleanup()
            self._spool = None

    def log_metrics(self, metrics: list[Metric]) -> None:
        item = {"metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics]}
        self._submit(item)

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self._submit({"folder": str(folder), "path": artifact_path})

    def counters(self) -> dict[str, int]:
        return {"mlflow_pending": len(self.pending), "mlflow_late": self.late,
                "mlflow_dropped": self.dropped}  # fmt: skip

    def flush(self) -> bool:
        """Send what is waiting, oldest first; False if the server is still away."""
        while self.pending:
            item = self.pending[0]
            try:
                self._send(item)
                self.late += 1
            except Exception as err:
                if transient(err):
                    return False
                self._drop(err)
            self.pending.pop(0)
            if "spooled" in item:
                shutil.rmtree(self.spool / item["spooled"], ignore_errors=True)
        self.close()  # nothing waits any more
        return True

    def _submit(self, item: dict[str, Any]) -> None:
        if self.flush():
            try:
                self._send(item)
                return
            except Exception as err:
                if not transient(err):
                    self._drop(err)
                    return
                print(f"vae-sweep: tracking server unreachable, keeping the logs ({err})"[:300])
        if "folder" in item:  # the caller deletes its folder: keep a copy
            name = uuid.uuid4().hex
            shutil.copytree(item.pop("folder"), self.spool / name)
            item["spooled"] = name
        self.pending.append(item)

    def _send(self, item: dict[str, Any]) -> None:
        if "metrics" in item:
            metrics = [Metric(*m) for m in item["metrics"]]
            self.client.log_batch(self.run_id, metrics=metrics)
        else:
            folder = self.spool / item["spooled"] if "spooled" in item else Path(item["folder"])
            self.client.log_artifacts(self.run_id, str(folder), item["path"])

    def _drop(self, err: Exception) -> None:
        self.dropped += 1
        print(f"vae-sweep: the tracking server refused a log call, dropped: {err}"[:500],
              file=sys.stderr)  # fmt: skip

    def save(self, folder: Path) -> None:
        """Write what is waiting (and the counters) into a checkpoint folder."""
        if not self.pending and not self.late and not self.dropped:
            return
        target = folder / FOLDER
        target.mkdir()
        for item in self.pending:
            if "spooled" in item:
                shutil.copytree(self.spool / item["spooled"], target / item["spooled"])
        state = {"pending": self.pending, "late": self.late, "dropped": self.dropped}
        (target / "pending.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, folder: Path, client: MlflowClient, run_id: str) -> Outbox:
        """The outbox a checkpoint folder carries (empty if none)."""
        outbox = cls(client, run_id)
        source = folder / FOLDER
        if (source / "pending.json").exists():
            state = json.loads((source / "pending.json").read_text())
            outbox.pending, outbox.late = state["pending"], state["late"]
            outbox.dropped = state["dropped"]
            for item in outbox.pending:
                if "spooled" in item:
                    shutil.copytree(source / item["spooled"], outbox.spool / item["spooled"])
        return outbox


DELIVERED = "vae_sweep.outbox_delivered"  # on a trial run: the checkpoint the driver sent
NOTHING = {"mlflow_pending": 0, "mlflow_late": 0, "mlflow_dropped": 0}


def deliver(client: MlflowClient, run_id: str, checkpoint, reported: dict) -> dict[str, int]:
    """Send what an ended trial's last checkpoint still carried for its run; the totals of its
    late, dropped and still pending log calls. `reported` is the trial's last result: when it
    said nothing was pending, the checkpoint is not opened (with s3:// storage that would be a
    download per trial). Once per checkpoint: a tag on the run says which was delivered."""
    counters = {key: int(reported.get(key, 0)) for key in NOTHING}
    if checkpoint is None or counters["mlflow_pending"] == 0:
        return counters
    done = client.get_run(run_id).data.tags.get(DELIVERED)
    if done and json.loads(done)["checkpoint"] == checkpoint.path:
        return json.loads(done)["counters"]
    with checkpoint.as_directory() as folder:
        box = Outbox.load(Path(folder), client, run_id)
    try:
        box.flush()
    finally:
        box.close()
    counters = box.counters()
    if not box.pending:
        note = json.dumps({"checkpoint": checkpoint.path, "counters": counters})
        client.set_tag(run_id, DELIVERED, note)
    return counters
