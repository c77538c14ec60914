"""Bad input a sweep meets only once trials run: a checkpoint damaged in the storage path
before --resume, a corner of the search space too large to allocate, a worker Ray's OOM
killer stops. Each is contained: the trial it hits restarts or fails alone, saying why on
stderr and on its MLflow run, the other trials finish, no epoch is logged twice, and a trial
that could only fail the same way again is not retried. Real sweeps through the engine (the
sweep script in a subprocess, a local Ray of its own, SQLite), real checkpoint files."""

import os
import signal
import time
from pathlib import Path

import pytest
import ray
from conftest import make_splits, migrated_store, tiny_config
from mlflow.tracking import MlflowClient
from ray import tune
from record import record
from test_sweep_faults import job_dir, start, trial_runs, trials_lost, wait_for

from sweeps.checkpoints import damage, restart_point
from sweeps.finish import _usable
from sweeps.lifecycle import error_text
from sweeps.tracking import image_step
from vae_core import fit, read_checkpoint
from vae_core.checkpoint import CHECKPOINT_NAME, CheckpointError

DAMAGED = (
    "cannot read as a safetensors checkpoint (Error while deserializing header: incomplete "
    "metadata, file not fully covered)"
)


def cut_to_half(path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.fixture(autouse=True)
def own_ray(monkeypatch):
    """Each sweep starts a Ray of its own: another `ray start` on this machine (someone's
    cluster) would otherwise take the sweep's trials."""
    monkeypatch.setenv("RAY_ADDRESS", "local")


def test_a_damaged_checkpoint_gives_way_to_the_newest_earlier_one_that_reads(tmp_path, capsys):
    trial = tmp_path / "trial_00_a"
    state = fit(tiny_config(epochs=1), make_splits())
    for index in range(3):  # Tune's folders; epochs 1, 2, 3
        state.epoch = index + 1
        state.save(trial / f"checkpoint_{index:06d}" / CHECKPOINT_NAME)
    folders = [tune.Checkpoint(str(trial / f"checkpoint_{i:06d}")) for i in range(3)]
    cut_to_half(trial / "checkpoint_000002" / CHECKPOINT_NAME)
    cut_to_half(trial / "checkpoint_000001" / CHECKPOINT_NAME)
    assert "cut short" in damage(folders[2]) and damage(folders[0]) is None
    # The end of a sweep passes over a damaged checkpoint Tune kept, saying so
    assert _usable(folders[0]) and not _usable(folders[2])
    assert f"{trial}/checkpoint_000002/{CHECKPOINT_NAME}: " in capsys.readouterr().err
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(trial / "checkpoint_000002" / CHECKPOINT_NAME)

    ckpt, said = restart_point(folders[2], error.value, "00 z4")
    assert ckpt.epoch == 1  # checkpoint_000001 is damaged too: the one before it
    assert said == (
        f"vae-sweep: trial 00 z4: {trial}/checkpoint_000002/{CHECKPOINT_NAME} is damaged: "
        f"{DAMAGED}; restarting from its previous checkpoint checkpoint_000000 (epoch 1)"
    )
    cut_to_half(trial / "checkpoint_000000" / CHECKPOINT_NAME)
    ckpt, said = restart_point(folders[2], error.value, "00 z4")
    assert ckpt is None
    assert said.endswith("restarting from scratch (epoch 0): no earlier checkpoint of it reads")


def test_a_checkpoint_cut_short_before_resume_restarts_its_trial_and_logs_each_epoch_once(
    tmp_path,
):
    """Ctrl+C after an epoch, the trial's latest checkpoint cut to half its size, --resume:
    the trial restarts from its previous checkpoint if one is kept and reads, else from
    scratch, and says which; its run holds each of the 5 epochs once; ASHA (rungs at epochs)
    lets it finish; the sweep registers an intact checkpoint. (4 epochs left at the Ctrl+C:
    the trial is still running when Tune stops, a few seconds later.)"""
    job = job_dir(tmp_path)
    state = job / "ray" / "cut"
    flags = ("--num-samples", "1", "--max-epochs", "5", "--name", "cut")
    sweep = start(job, *flags)
    wait_for(sweep, lambda: list(state.glob("trial_*/checkpoint_000000")), "an epoch")
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, err[-3000:]
    # The checkpoint Tune restores the trial from: the latest it registered (a newer folder
    # the trial wrote as the driver stopped is unknown to it, and written again)
    (known,) = tune.ExperimentAnalysis(str(state)).trials
    latest = Path(known.checkpoint.path) / CHECKPOINT_NAME
    trial = latest.parent.parent
    stored = sorted(c for c in trial.glob("checkpoint_*") if c.name <= latest.parent.name)
    cut_to_half(latest)

    resumed_at = time.monotonic()
    resumed = start(job, "--resume", "--name", "cut")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    said = f"{latest} is damaged: {DAMAGED}; restarting"
    if len(stored) > 1:  # Tune keeps the best and the latest: an earlier one if it was better
        said += f" from its previous checkpoint {stored[-2].name}"
    else:
        said += " from scratch (epoch 0)"
    assert said in err, err[-3000:]
    client = MlflowClient(f"sqlite:///{job / 'mlflow.db'}")
    runs = trial_runs(job)
    assert len(runs) == 1
    run = runs[0]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_bpd")]
    assert sorted(steps) == [1, 2, 3, 4, 5]  # the retrained epochs are not logged again
    drawn = [  # and their grids are not drawn again: one file per grid and epoch
        (a.path.split("+step+")[0], image_step(Path(a.path).name))
        for a in client.list_artifacts(run.info.run_id, "images")
        if a.path.endswith(".png")
    ]
    assert sorted(drawn) == sorted(set(drawn)) and {s for _, s in drawn} == {1, 2, 3, 4, 5}
    assert run.info.status == "FINISHED" and run.data.tags["vae_sweep.outcome"] == "completed"
    assert said in run.data.tags["vae_sweep.restarted"]
    assert "registered   shapes-vae-smoke version 1" in out
    lost = trials_lost(job, "cut", runs)
    assert lost == 0
    record(
        "bad input met mid-sweep",
        test="tests/test_bad_input_mid_sweep.py::"
        "test_a_checkpoint_cut_short_before_resume_restarts_its_trial_and_logs_each_epoch_once",
        input="a trial's latest checkpoint cut to half its size before --resume",
        message=said.replace(str(trial), "<trial>"),
        outcome="the trial restarted and finished in its own run; the sweep registered",
        exit_code=resumed.returncode,
        trials_failed=0,
        trials_lost=lost,
        points_logged_twice=len(steps) - len(set(steps)),
        seconds_to_finish=round(time.monotonic() - resumed_at, 1),
    )


TOO_LARGE = """
from ray import tune
from sweeps.engine import main

# latent_dim 2**40: the encoder's last layer alone is 2**41 x 64 float32 weights, 512 TiB, more
# than a process can address, so torch's allocator refuses at once: nothing is swapped or
# touched, whatever the machine (an overcommitting kernel included).
SEARCH_SPACE = {"latent_dim": tune.grid_search([4, 2**40])}
BASE_CONFIG = {"dataset": "shapes", "arch": "mlp", "hidden_dims": [64], "image_size": 32,
               "batch_size": 64, "iwae_samples": 4}

if __name__ == "__main__":
    main(SEARCH_SPACE, BASE_CONFIG, description="a sweep whose one corner cannot be allocated")
"""


def test_a_trial_out_of_memory_fails_alone_says_why_and_is_not_retried(tmp_path):
    (tmp_path / "shapes.py").write_text(TOO_LARGE)
    migrated_store(tmp_path / "mlflow.db")
    sweep = start(tmp_path, "--num-samples", "1", "--max-epochs", "2", "--name", "oom")
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = trial_runs(tmp_path)
    (huge,) = [r for r in runs if r.data.params["model.latent_dim"] == str(2**40)]
    (small,) = [r for r in runs if r.data.params["model.latent_dim"] == "4"]
    why = huge.data.tags["vae_sweep.out_of_memory"]
    assert why.startswith("out of memory on cpu: DefaultCPUAllocator: can't allocate memory")
    assert "latent_dim=1099511627776, batch_size=64" in why and "Narrow the search" in why
    assert huge.info.status == "FAILED" and huge.data.tags["vae_sweep.outcome"] == "failed"
    error = huge.data.tags["vae_sweep.error"]  # a retry's: it failed at once, saying so
    assert error.startswith("TrialOutOfMemory: ") and "not retried: it would run out" in error
    assert client.get_metric_history(huge.info.run_id, "train_loss") == []  # no retry trained
    steps = [m.step for m in client.get_metric_history(small.info.run_id, "val_bpd")]
    assert small.info.status == "FINISHED" and steps == [1, 2]
    trials = tune.ExperimentAnalysis(str(tmp_path / "ray" / "oom")).trials
    assert sorted(t.status for t in trials) == ["ERROR", "TERMINATED"]
    attempts = max(t.num_failures for t in trials)  # Tune's retries (max_failures=2), bounded
    assert attempts == 3
    summary = f"  failed       {huge.info.run_name}: TrialOutOfMemory: out of memory on cpu"
    assert summary in out, out[-3000:]
    parent = [r for r in client.search_runs(["1"]) if r.data.tags["vae_sweep.role"] == "sweep"]
    note = parent[0].data.tags["mlflow.note.content"]
    assert "2 trials (" in note and "1 failed" in note and "1 completed" in note
    assert f"Failed: {huge.info.run_name}: TrialOutOfMemory: out of memory on cpu" in note
    assert "registered   shapes32-vae-smoke version 1" in out
    lost = trials_lost(tmp_path, "oom", runs)
    assert lost == 0
    record(
        "bad input met mid-sweep",
        test="tests/test_bad_input_mid_sweep.py::"
        "test_a_trial_out_of_memory_fails_alone_says_why_and_is_not_retried",
        input="a search-space corner too large to allocate (latent_dim 2**40: 512 TiB)",
        message=why[: why.index(" (arch=")],
        outcome="that trial FAILED with the reason (its run, the summary, the sweep's run); "
        "its retries failed at once; the other trial finished and was registered",
        exit_code=sweep.returncode,
        trials_failed=1,
        trials_lost=lost,
        attempts=attempts,
        retries_that_trained=0,
    )


def test_the_ray_oom_killer_s_words_are_what_a_failed_trial_says(tmp_path, monkeypatch):
    """Ray's memory monitor told to kill above 1% of the node's memory kills a trial's worker
    at once (only this test's own Ray's workers, and nothing grows: the machine is never
    short): what the trial's run and the console say (lifecycle.error_text) is the node's
    memory and the threshold, not Ray's advice; Tune's retries stop at max_failures."""
    monkeypatch.setenv("RAY_memory_usage_threshold", "0.01")
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "100")

    def trial(config):
        time.sleep(60)  # killed long before

    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        tune.Tuner(
            trial,
            run_config=tune.RunConfig(
                name="oom",
                storage_path=str(tmp_path),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=2),  # as a sweep's
            ),
        ).fit()
        (killed,) = tune.ExperimentAnalysis(str(tmp_path / "oom")).trials
        said = error_text(killed)  # (the error file is found through Ray's session)
    finally:
        ray.shutdown()
    assert said.startswith("1 worker(s) were killed due to the node running low on memory. ")
    assert "Memory on the node (IP: " in said and "OOM kill reason: Memory usage" in said
    assert "exceeded threshold" in said and "Refer to the documentation" not in said
    assert killed.status == "ERROR" and killed.num_failures == 3
    record(
        "bad input met mid-sweep",
        test="tests/test_bad_input_mid_sweep.py::"
        "test_the_ray_oom_killer_s_words_are_what_a_failed_trial_says",
        input="a trial's worker killed by Ray's OOM killer (threshold 1% of the node)",
        message=said[: said.index(" Memory on the node")],
        outcome="the trial ends ERROR after Tune's 2 retries; its run's error says the node's "
        "memory and the threshold",
        exit_code="-",
        trials_failed=1,
        attempts=killed.num_failures,
    )
