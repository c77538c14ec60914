"""benchmarks/tracking_load.py at a tiny size on a real `mlflow server` (SQLite): 4 trial
processes log 2 epochs each through the real TrialRun and Outbox, and the store holds every
(run, metric, step) once; the counter sees a point deleted, a point duplicated, and a point
that still waits in a checkpoint's outbox as kept, not lost."""

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from servers import free_port, start_mlflow_server, stop

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import tracking_load  # noqa: E402
from _load_trial import METRICS, Plan, error_kind, trial  # noqa: E402

from sweeps.outbox import Outbox  # noqa: E402


@pytest.fixture
def server(tmp_path):
    port = free_port()
    proc = start_mlflow_server(tmp_path, port)
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def test_every_point_arrives_once_and_a_lost_or_duplicated_one_is_counted(server, tmp_path):
    plan = Plan(trials=4, epoch_s=0.0, epochs=2, image_every=1, seconds=60, drain_s=30)
    stage = tracking_load.run_stage(server, plan, tmp_path / "stage")
    assert [t.get("error") for t in stage["trials"]] == [None] * 4
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logged = tracking_load.logged_points(stage["trials"])
    assert len(logged) == 4 * 2 * len(METRICS)
    whole = {"logged": 80, "present": 80, "kept": 0, "lost": 0, "duplicated": 0, "unexpected": 0}
    assert tracking_load.count_points(store, logged) == whole
    runs = tracking_load.count_runs(store, stage["parent"], trials=4)
    assert runs == {"runs": 4, "trials_without_run": 0, "duplicated_runs": 0, "left_running": 0}
    # 2 image epochs: a PNG and a webp per grid each, and the 3 latest grids, per trial
    files = tracking_load.count_files(tmp_path / "artifacts", stage)
    assert files == {"expected": 4 * (2 * 3 * 2 + 3), "present": 4 * (2 * 3 * 2 + 3)}
    figures = tracking_load.summary(stage)
    assert figures["log_batch"]["calls"] == 8 and figures["errors"] == {}
    assert figures["artifacts"]["calls"] == 4 * 2 * 2 and figures["failed_trials"] == {}

    run = stage["trials"][0]["run_id"]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute(
            "DELETE FROM metrics WHERE run_uuid = ? AND key = 'val_bpd' AND step = 1", (run,)
        )
        db.execute(  # a second row for (run, val_kl, 2), as a resend with a new timestamp makes
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
            "SELECT key, value + 1, timestamp + 1, run_uuid, step, is_nan FROM metrics "
            "WHERE run_uuid = ? AND key = 'val_kl' AND step = 2",
            (run,),
        )
    counts = tracking_load.count_points(store, logged)
    assert (counts["present"], counts["lost"], counts["duplicated"]) == (79, 1, 1)
    counts = tracking_load.count_points(store, logged, kept={(run, "val_bpd", 1)})
    assert (counts["lost"], counts["kept"]) == (0, 1)


def test_points_waiting_in_a_checkpoint_are_read_back_as_kept(tmp_path, monkeypatch):
    """An Outbox whose server is away keeps the batch; saved into the trial's checkpoint
    folder, the benchmark reads it back as kept for later delivery."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    box = Outbox(MlflowClient(f"http://127.0.0.1:{free_port()}"), "run0")  # nobody listens
    with pytest.raises(Exception) as refused:
        box.client.log_batch("run0", metrics=[Metric("val_bpd", 1.0, 0, 3)])
    assert error_kind(refused.value) == "refused"
    box.log_metrics([Metric("val_bpd", 1.0, 0, 3), Metric("val_kl", 2.0, 0, 3)])
    assert box.counters()["mlflow_pending"] == 1
    (tmp_path / "checkpoint-0").mkdir()
    box.save(tmp_path / "checkpoint-0")
    trials = [{"index": 0, "run_id": "run0"}]
    kept = tracking_load.kept_points(tmp_path, trials)
    assert kept == {("run0", "val_bpd", 3), ("run0", "val_kl", 3)}


def test_a_trial_that_cannot_open_its_run_gives_up_in_time_and_says_why(tmp_path, monkeypatch):
    """With nobody listening, TrialRun would wait 10 minutes; the trial gives up after its
    plan's open_s, and its record names why and what its calls met."""
    import multiprocessing

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    plan = Plan(trials=1, epoch_s=0.0, epochs=1, open_s=3)
    stage = {"name": "s", "experiment_id": "1", "parent": "p", "pngs": str(tmp_path)}
    context = multiprocessing.get_context("fork")
    url = f"http://127.0.0.1:{free_port()}"
    proc = context.Process(target=trial, args=(url, plan, stage, 0, context.Barrier(1), tmp_path))
    proc.start()
    proc.join(timeout=60)
    record = json.loads((tmp_path / "trial-0.json").read_text())
    assert record["error"] == "GaveUp: opening its run took over 3 s"
    assert "run_id" not in record and record["epochs_logged"] == 0
    assert {c["outcome"] for c in record["calls"]} == {"refused"}
