"""A sweep survives a trial's worker dying and its own interruption: restored trials continue
their own MLflow runs, nothing is duplicated, nothing is left RUNNING."""

import os
import shutil
import signal
import subprocess
import sys
import time

import optuna
from conftest import REPO
from mlflow.tracking import MlflowClient


def start(job, *flags):
    return subprocess.Popen(
        [
            sys.executable,
            str(job / "shapes.py"),
            "--smoke-test",
            "--storage-path",
            str(job / "ray"),
            "--tracking-uri",
            f"sqlite:///{job / 'mlflow.db'}",
            *flags,
        ],
        cwd=job,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(sweep, condition, what, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if sweep.poll() is not None:
            out, err = sweep.communicate()
            raise AssertionError(
                f"the sweep ended ({sweep.returncode}) before {what}:\n"
                f"{out[-2000:]}\n{err[-4000:]}"
            )
        time.sleep(0.2)
    sweep.kill()
    raise AssertionError(f"timed out waiting for {what}")


def trial_runs(job):
    db = job / "mlflow.db"
    if not db.exists():
        return []
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("vae-sweep/shapes")
    if experiment is None:
        return []
    return [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("vae_sweep.role") == "trial"
    ]


def job_dir(tmp_path):
    shutil.copy(REPO / "sweeps" / "shapes.py", tmp_path / "shapes.py")
    return tmp_path


def test_a_killed_trial_worker_is_restored_into_its_own_run(tmp_path):
    job = job_dir(tmp_path)
    sweep = start(job, "--num-samples", "1", "--max-epochs", "8", "--name", "kill")

    def checkpointed_pid():
        # the files first: opening the MLflow DB while the driver still creates it would race
        if not list((job / "ray" / "kill").glob("train_trial_*/checkpoint_000000")):
            return None
        runs = trial_runs(job)
        return runs and runs[0].data.tags.get("ray.worker_pid")

    pid = int(wait_for(sweep, checkpointed_pid, "the trial's first checkpoint"))
    os.kill(pid, signal.SIGKILL)
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    runs = trial_runs(job)
    assert len(runs) == 1  # the restored trial continued its run, no second one
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["ray.worker_pid"] != str(pid)
    client = MlflowClient(f"sqlite:///{job / 'mlflow.db'}")
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_bpd")}
    assert steps == set(range(1, 9))


def test_an_interrupted_sweep_resumes_without_duplicates(tmp_path):
    job = job_dir(tmp_path)
    flags = ("--num-samples", "3", "--max-epochs", "4", "--max-concurrent", "1", "--name", "cut")
    sweep = start(job, *flags)
    second = job / "ray" / "cut"
    wait_for(
        sweep, lambda: list(second.glob("train_trial_*/checkpoint_000001")), "a second checkpoint"
    )
    sweep.send_signal(signal.SIGINT)
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, err[-3000:]
    assert "interrupted with" in err and "--resume --name cut" in err
    assert all(r.info.status != "RUNNING" for r in trial_runs(job))

    resumed = start(job, *flags, "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    runs = trial_runs(job)
    assert len(runs) == 3 and len({r.data.tags["ray.trial_id"] for r in runs}) == 3
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    client = MlflowClient(f"sqlite:///{job / 'mlflow.db'}")
    parents = [
        r for r in client.search_runs(["1"]) if r.data.tags.get("vae_sweep.role") == "sweep"
    ]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    study = optuna.load_study(
        study_name="cut", storage=f"sqlite:///{job / 'ray' / 'cut' / 'optuna.db'}"
    )
    assert len(study.trials) == 3
    assert "registered   shapes-vae version 1" in out
