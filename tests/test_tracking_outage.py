"""The tracking server goes away in the middle of a sweep and comes back: the trials keep
training, what they could not log waits in their outboxes (and checkpoints) and arrives once
the server is back, every epoch exactly once; the sweep counts and reports it."""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO
from mlflow.tracking import MlflowClient
from record import record
from servers import free_port, start_mlflow_server, stop

EPOCHS = 24  # at 32 px: still training when the server goes, some seconds after epoch 1


@pytest.fixture
def server(tmp_path):
    port = free_port()
    state = {"proc": start_mlflow_server(tmp_path, port), "url": f"http://127.0.0.1:{port}"}
    yield state
    if state["proc"].poll() is None:
        stop(state["proc"])


def trial_runs(client):
    experiment = client.get_experiment_by_name("vae-sweep/shapes")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if r.data.tags.get("vae_sweep.role") == "trial"]


def newest_checkpoints(storage: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in storage.glob("*/*/checkpoint_*"))


def test_a_tracking_server_outage_loses_no_metric_and_no_image(server, tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    shutil.copy(REPO / "sweeps" / "shapes.py", job / "shapes.py")
    spools = set(Path(tempfile.gettempdir()).glob("outbox-*"))
    sweep = subprocess.Popen(
        [sys.executable, "shapes.py", "--smoke-test", "--num-samples", "2"]
        + ["--max-epochs", str(EPOCHS), "--grace-period", str(EPOCHS), "--image-every", "1"]
        + ["--tracking-uri", server["url"], "--storage-path", str(job / "ray")],
        cwd=job,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = MlflowClient(server["url"])

    def logged_once():
        runs = trial_runs(client)
        return len(runs) == 2 and all("val_bpd" in r.data.metrics for r in runs)

    deadline = time.monotonic() + 600
    while not logged_once():
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()[1][-3000:]
        time.sleep(0.5)
    stop(server["proc"])  # the server goes away mid-sweep
    down_at = time.monotonic()
    before = newest_checkpoints(job / "ray")
    time.sleep(12)
    during = newest_checkpoints(job / "ray")
    assert sweep.poll() is None and max(during) > max(before)  # the trials kept training
    server["proc"] = start_mlflow_server(tmp_path, int(server["url"].rsplit(":", 1)[1]))
    back_at = time.monotonic()

    out, err = sweep.communicate(timeout=900)
    ended_at = time.monotonic()
    assert sweep.returncode == 0, err[-3000:]
    runs = trial_runs(client)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    missing = duplicated = 0
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_bpd")]
        assert sorted(steps) == list(range(1, EPOCHS + 1))  # each epoch once, none lost
        missing += EPOCHS - len(set(steps))
        duplicated += len(steps) - len(set(steps))
        images = [
            int(a.path.split("+step+")[1].split("+")[0])  # MLflow's stepped image names
            for a in client.list_artifacts(run.info.run_id, "images")
            if a.path.startswith("images/reconstructions+step+") and a.path.endswith(".png")
        ]
        assert sorted(images) == list(range(1, EPOCHS + 1))  # each epoch's grid once
        missing += EPOCHS - len(set(images))
        duplicated += len(images) - len(set(images))
    # The spooled copies of images that waited for the server are gone once delivered.
    assert set(Path(tempfile.gettempdir()).glob("outbox-*")) - spools == set()
    parent = next(
        r for r in client.search_runs(["1"]) if r.data.tags.get("vae_sweep.role") == "sweep"
    )
    logs = json.loads(parent.data.tags["vae_sweep.log_calls"])
    assert logs["mlflow_late"] > 0 and logs["mlflow_dropped"] == logs["mlflow_pending"] == 0
    assert f"{logs['mlflow_late']} log calls delivered late" in out
    assert "registered   shapes32-vae-smoke version 1" in out
    record(
        "tracking server down mid-sweep, then back",
        test="tests/test_tracking_outage.py::test_a_tracking_server_outage_loses_no_metric_and_no_image",
        trials=2,
        trials_lost=sum(r.info.status != "FINISHED" for r in runs),
        duplicate_runs=len(runs) - len({r.data.tags["ray.trial_id"] for r in runs}),
        points_duplicated=duplicated,
        left_running=sum(r.info.status == "RUNNING" for r in runs),
        seconds_down=round(back_at - down_at, 1),
        log_calls_late=logs["mlflow_late"],
        log_calls_dropped=logs["mlflow_dropped"],
        points_missing=missing,
        seconds_from_server_back_to_sweep_end=round(ended_at - back_at, 1),
    )
