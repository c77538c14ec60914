"""A trial's MLflow run across its tries, on a real SQLite store: a retry continues the run
the first try opened (found by the trial's id, or its id from the checkpoint), completes what
that try could not log, and ends as the retry does."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import migrated_store
from mlflow.tracking import MlflowClient
from PIL import Image

from sweeps import tracking
from sweeps.lifecycle import RETRIED_AFTER, SweepRuns, TrialRun, end_if_running, failed
from sweeps.tracking import ERROR, NOTE, OUTCOME, PARENT, ROLE, TRIAL_ID

PARAMS = {"model.latent_dim": 16, "train.lr": 0.001, "resources.cpu": 1.0}


@pytest.fixture
def sweep(tmp_path):
    uri = migrated_store(tmp_path / "mlflow.db")
    runs = SweepRuns(uri, "vae-sweep/shapes", "s")
    runs.look_up(resume=False)
    parent = runs.open({"num_samples": 2}, {"dataset": "shapes"}, {})
    return uri, runs.experiment_id, parent


def open_run(sweep, run_id=None, params=PARAMS) -> TrialRun:
    uri, experiment_id, parent = sweep
    return TrialRun(uri, experiment_id, parent, run_id, "t0", "abc_00000", {}, params)


def test_a_run_the_server_made_before_the_params_reached_it_gets_them_on_retry(sweep):
    """The server fails between create_run and log_params: the trial's retry finds the run
    by the trial's id and must log the params there (a run with params {} is lost to every
    comparison in the UI)."""
    uri, experiment_id, parent = sweep
    client = MlflowClient(uri)
    made = client.create_run(  # what the first try's create_run left, and nothing more
        experiment_id,
        run_name="t0",
        tags={ROLE: "trial", PARENT: parent, TRIAL_ID: "abc_00000"},
    )
    retry = open_run(sweep)  # no run id: the first try died before its first checkpoint
    assert retry.run_id == made.info.run_id
    params = client.get_run(retry.run_id).data.params
    assert params == {k: str(v) for k, v in PARAMS.items()}
    # Continued again (another retry, on another node with other resources): what the run
    # holds stays, nothing is refused.
    again = open_run(sweep, retry.run_id, {**PARAMS, "resources.cpu": 2.0})
    assert client.get_run(again.run_id).data.params["resources.cpu"] == "1.0"


def test_a_retried_trial_that_finishes_is_not_counted_failed(sweep):
    """A failed trial's retry continues its run; when the retry completes, the run says
    completed, not the first try's failure (and `vae-sweep show` counts it so)."""
    uri, _, parent = sweep
    client = MlflowClient(uri)
    first = open_run(sweep)
    first.end("FAILED", failed("OSError: [Errno 28] No space left on device", 2))
    retry = open_run(sweep, first.run_id)  # Tune's retry, from the checkpoint of epoch 2
    tags = client.get_run(retry.run_id).data.tags
    assert OUTCOME not in tags and ERROR not in tags and NOTE not in tags
    assert tags[RETRIED_AFTER] == "OSError: [Errno 28] No space left on device"
    retry.end("FINISHED")  # the trainable's own end, after its last epoch
    completed = {OUTCOME: "completed", NOTE: "Completed: trained all 3 epochs."}
    end_if_running(client, retry.run_id, "FINISHED", completed)  # the driver, after
    run = client.get_run(retry.run_id)
    assert (run.info.status, run.data.tags[OUTCOME]) == ("FINISHED", "completed")
    runs = SweepRuns(uri, "vae-sweep/shapes", "s")
    runs.look_up(resume=True)
    assert runs.outcomes() == {"completed": 1} and runs.failures() == []


def test_a_restarted_trial_knows_which_epochs_have_their_grids(sweep, tmp_path):
    """A trial restarted from an earlier checkpoint than its run reached must not draw the
    grids of those epochs again: the UI's image charts would show each step twice."""
    first = open_run(sweep)
    png = tmp_path / "samples.png"
    Image.new("L", (8, 8)).save(png)
    for epoch in (1, 2):
        folder = tmp_path / f"e{epoch}"
        folder.mkdir()
        tracking.stepped_images([png], epoch, folder)
        first.log_files(folder, tracking.IMAGES)
    first.outbox.close()
    restarted = open_run(sweep, first.run_id)
    assert restarted.image_steps_logged() == {1, 2}
    assert open_run(sweep, None).image_steps_logged() == {1, 2}  # found by the trial's id
    assert tracking.image_step(Path("samples+step+12+timestamp+1+x.png").name) == 12
    assert tracking.image_step("samples.png") is None


def test_a_trial_tune_ends_in_error_is_failed_whatever_a_forgotten_try_said(sweep):
    """A try completed the trial and its run said so, but the driver died before Tune saved
    that; the retry, from the checkpoint before, failed for good. Tune (ERROR) and Optuna
    (FAIL) say failed: so must the run (the chaos run at seed 0 found it saying completed)."""
    uri = sweep[0]
    client = MlflowClient(uri)
    run = open_run(sweep)
    run.end("FINISHED", {OUTCOME: "completed", NOTE: "Completed: trained all 6 epochs."})
    tags = failed("RayActorError: the actor died unexpectedly", 5)
    assert not end_if_running(client, run.run_id, "FAILED", tags)  # not Tune's final word
    assert client.get_run(run.run_id).data.tags[OUTCOME] == "completed"
    assert end_if_running(client, run.run_id, "FAILED", tags, final=True)
    ended = client.get_run(run.run_id)
    assert (ended.info.status, ended.data.tags[OUTCOME]) == ("FAILED", "failed")
    assert ended.data.tags[ERROR] == "RayActorError: the actor died unexpectedly"
