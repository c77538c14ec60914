"""A sweep survives a trial's worker dying and its own interruption: restored trials continue
their own MLflow runs, nothing is duplicated, nothing is left RUNNING."""

import os
import shutil
import signal
import subprocess
import sys
import time

import optuna
from conftest import migrated_store, small_disk
from mlflow.tracking import MlflowClient
from ray import tune
from record import record

from sweeps.tracking import OUTCOME, PARENT, ROLE, TRIAL_ID


def start(job, *flags, storage=None, home=None, cwd=None):
    """The sweep script as a user runs it; `home` and `cwd` for a driver on another head."""
    env = {**os.environ, "HOME": str(home)} if home is not None else None
    return subprocess.Popen(
        [sys.executable, str(job / "shapes.py"), "--smoke-test"]
        + ["--storage-path", storage or str(job / "ray")]
        + ["--tracking-uri", f"sqlite:///{job / 'mlflow.db'}", *flags],
        cwd=cwd or job,
        env=env,
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


def first_point_after(client, runs, since: float) -> float:
    """Seconds from `since` (time.time()) to the first val_bpd point any of `runs` logged
    after it: how long a fault kept the sweep from making progress."""
    stamps = [
        m.timestamp / 1000
        for r in runs
        for m in client.get_metric_history(r.info.run_id, "val_bpd")
        if m.timestamp / 1000 > since
    ]
    return round(min(stamps) - since, 1)


def duplicates(runs) -> int:
    ids = [r.data.tags["ray.trial_id"] for r in runs]
    return len(ids) - len(set(ids))


def trials_lost(job, name: str, runs) -> int:
    """Tune's trials of sweep `name` that have no MLflow run, are left RUNNING, or whose run
    misses one of the epochs the trial trained: counted from the two stores."""
    client = MlflowClient(f"sqlite:///{job / 'mlflow.db'}")
    by_id = {r.data.tags["ray.trial_id"]: r for r in runs}
    lost = 0
    for trial in tune.ExperimentAnalysis(str(job / "ray" / name)).trials:
        run = by_id.get(trial.trial_id)
        if run is None or run.info.status == "RUNNING":
            lost += 1
            continue
        steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_bpd")}
        lost += steps != set(range(1, int(trial.last_result.get("epoch", 0)) + 1))
    return lost


def points_logged_twice(job, runs) -> int:
    """val_bpd points of a step a run already had: epochs trained again after a restore from
    an older checkpoint (the driver died after the trial had logged them)."""
    client = MlflowClient(f"sqlite:///{job / 'mlflow.db'}")
    steps = [[m.step for m in client.get_metric_history(r.info.run_id, "val_bpd")] for r in runs]
    return sum(len(s) - len(set(s)) for s in steps)


# The quick start's space and defaults at 64 px: epochs slow enough that a fault can land
# while the trials train (at the quick start's 32 px a smoke trial is over before it).
AT_64_PX = """
from sweeps.engine import main
from sweeps.shapes import BASE_CONFIG, DEFAULTS, SEARCH_SPACE

if __name__ == "__main__":
    main(SEARCH_SPACE, {**BASE_CONFIG, "image_size": 64}, defaults=DEFAULTS)
"""


def job_dir(tmp_path):
    (tmp_path / "shapes.py").write_text(AT_64_PX)
    migrated_store(tmp_path / "mlflow.db")
    return tmp_path


def test_a_killed_trial_worker_is_restored_into_its_own_run(tmp_path):
    job = job_dir(tmp_path)
    sweep = start(job, "--num-samples", "1", "--max-epochs", "5", "--name", "kill")

    def checkpointed_pid():
        # the files first: opening the MLflow DB while the driver still creates it would race
        if not list((job / "ray" / "kill").glob("trial_*/checkpoint_000000")):
            return None
        runs = trial_runs(job)
        return runs and runs[0].data.tags.get("ray.worker_pid")

    pid = int(wait_for(sweep, checkpointed_pid, "the trial's first checkpoint"))
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    runs = trial_runs(job)
    assert len(runs) == 1  # the restored trial continued its run, no second one
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["ray.worker_pid"] != str(pid)
    client = MlflowClient(f"sqlite:///{job / 'mlflow.db'}")
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_bpd")}
    assert steps == set(range(1, 6))
    lost = trials_lost(job, "kill", runs)
    assert lost == 0
    record(
        "trial worker killed (SIGKILL)",
        test="tests/test_sweep_faults.py::test_a_killed_trial_worker_is_restored_into_its_own_run",
        trials=1,
        trials_lost=lost,
        duplicate_runs=len(runs) - 1,
        left_running=sum(r.info.status == "RUNNING" for r in runs),
        points_missing=5 - len(steps),
        seconds_to_recover=first_point_after(client, runs, killed_at),
    )


def logged_epochs(client, runs) -> int:
    """Epochs logged in all: distinct val_bpd steps per run."""
    history = [client.get_metric_history(r.info.run_id, "val_bpd") for r in runs]
    return sum(len({m.step for m in h}) for h in history)


AT_128_PX = AT_64_PX.replace('"image_size": 64', '"image_size": 128')


def test_ctrl_c_during_a_first_epoch_leaves_no_run_running(tmp_path):
    """Ctrl+C while a trial trains its first epoch: its run is open in MLflow, but Tune's
    state holds no run id for it yet (none reported). Every run of the sweep ends KILLED,
    outcome interrupted, the parent too, and the message says how to resume."""
    job = job_dir(tmp_path)
    (job / "shapes.py").write_text(AT_128_PX)  # a first epoch of several seconds
    flags = ("--num-samples", "2", "--max-concurrent", "1", "--name", "early")
    sweep = start(job, *flags)
    wait_for(sweep, lambda: trial_runs(job), "a trial's run")
    assert not list((job / "ray" / "early").glob("trial_*/checkpoint_*"))  # no epoch yet
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, err[-3000:]
    assert "interrupted with" in err and "--resume --name early" in err
    client = MlflowClient(f"sqlite:///{job / 'mlflow.db'}")
    runs = client.search_runs(["1"])
    (parent,) = [r for r in runs if r.data.tags.get(ROLE) == "sweep"]
    trials = [r for r in runs if r.data.tags.get(ROLE) == "trial"]
    assert trials and all(not r.data.metrics.get("val_bpd") for r in trials)  # not vacuous
    for run in [parent, *trials]:
        assert run.info.status == "KILLED", run.info.run_name
        assert run.data.tags["vae_sweep.stop_reason"].startswith("interrupted; continue with")
    assert all(r.data.tags[OUTCOME] == "interrupted" for r in trials)


def test_an_interrupted_then_killed_sweep_resumes_without_duplicates(tmp_path):
    """Ctrl+C, --resume with the name alone (the flags the sweep started with are kept),
    SIGKILL of that driver, --resume again: one run per trial, nothing RUNNING, one
    registration, and an epoch budget that counts every epoch trained before each stop.
    The state is on storage given as a URI (file://, as s3:// would be) and each driver runs
    on a new head: an empty HOME (the Optuna study's cache is gone) and another folder."""
    job = job_dir(tmp_path)
    storage, home = f"file://{job / 'ray'}", job / "head"

    def new_head(number: int) -> dict:
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir()
        (job / f"cwd{number}").mkdir()
        return {"storage": storage, "home": home, "cwd": job / f"cwd{number}"}

    flags = ("--num-samples", "3", "--max-epochs", "4", "--max-concurrent", "1")
    flags += ("--scheduler", "fifo", "--epoch-budget", str(BUDGET), "--name", "cut")
    flags += ("--search", "tpe")  # its study travels with the state
    client = MlflowClient(f"sqlite:///{job / 'mlflow.db'}")
    state = job / "ray" / "cut"

    def checkpoints() -> int:
        return sum(1 for _ in state.glob("trial_*/checkpoint_*"))

    sweep = start(job, *flags, **new_head(1))
    wait_for(sweep, lambda: list(state.glob("trial_*/checkpoint_000001")), "2 epochs")
    sweep.send_signal(signal.SIGINT)
    interrupted_at = time.monotonic()
    out, err = sweep.communicate(timeout=300)
    stopped_s = time.monotonic() - interrupted_at
    assert sweep.returncode == 130, err[-3000:]
    assert "interrupted with" in err and "--resume --name cut" in err
    assert all(r.info.status != "RUNNING" for r in trial_runs(job))
    assert 0 < logged_epochs(client, trial_runs(job)) < BUDGET

    resumed = start(job, "--resume", "--name", "cut", **new_head(2))  # the rest as it started
    done_before = logged_epochs(client, trial_runs(job))
    wait_for(
        resumed,
        lambda: logged_epochs(client, trial_runs(job)) >= done_before + 2 and checkpoints(),
        "2 more epochs",
    )
    resumed.kill()  # SIGKILL: no handler runs, nothing is ended or saved on the way out
    resumed.communicate(timeout=60)
    left = sum(r.info.status == "RUNNING" for r in trial_runs(job))
    assert left > 0

    resumed_at = time.time()
    again = start(job, "--resume", "--name", "cut", **new_head(3))
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    runs = trial_runs(job)
    assert duplicates(runs) == 0 and all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    # A trial the killed driver had started after it last saved its state is unknown to Tune:
    # its run ends KILLED as lost, and Tune proposes it again. The budget counts what Tune knows.
    known = {t.trial_id for t in tune.ExperimentAnalysis(str(state)).trials}
    kept = [r for r in runs if r.data.tags["ray.trial_id"] in known]
    lost_with_driver = [r for r in runs if r not in kept]
    assert all(
        r.data.tags["vae_sweep.stop_reason"] == "lost with the driver; proposed again"
        for r in lost_with_driver
    )
    assert logged_epochs(client, kept) == BUDGET  # one trial at a time: the budget is exact
    cut = [r for r in kept if r.data.tags["vae_sweep.outcome"] == "stopped"]
    assert len(cut) == 1 and cut[0].info.status == "FINISHED"  # stopped by design: no crash
    assert (
        cut[0]
        .data.tags["vae_sweep.stop_reason"]
        .endswith(f": the sweep's epoch budget ({BUDGET}) was spent")
    )
    parents = [
        r for r in client.search_runs(["1"]) if r.data.tags.get("vae_sweep.role") == "sweep"
    ]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    # TPE's history outlived each head: the last one's study has every trial, from the first
    study_db = home / ".cache" / "vae-sweep" / "optuna" / "cut" / "optuna.db"
    study = optuna.load_study(study_name="cut", storage=f"sqlite:///{study_db}")
    # ... that Tune knew: one the killed driver proposed after its last save went with its head
    assert len(study.trials) == len(kept)
    assert (state / "optuna-study.db").exists()  # the copy that travels with the state
    assert all(t.state.name != "RUNNING" for t in study.trials)
    told = {t.number: t.state.name for t in study.trials}  # as Tune says each trial ended
    for trial in tune.ExperimentAnalysis(str(state)).trials:
        ran = int((trial.last_result or {}).get("epoch", 0))
        assert told[trial.config["trial_index"]] == ("COMPLETE" if ran == 4 else "PRUNED")
    versions = client.search_model_versions("name = 'shapes-vae-smoke'")
    assert len(versions) == 1 and "registered   shapes-vae-smoke version 1" in out
    lost = trials_lost(job, "cut", runs)
    assert lost == 0

    finished = start(job, "--resume", "--name", "cut", storage=storage, home=home)  # no new
    out, err = finished.communicate(timeout=600)
    assert finished.returncode == 0, err[-3000:]
    assert len(client.search_model_versions("name = 'shapes-vae-smoke'")) == 1
    record(
        "driver interrupted (Ctrl+C), resumed, killed (SIGKILL), resumed twice",
        test="tests/test_sweep_faults.py::test_an_interrupted_then_killed_sweep_resumes_without_duplicates",
        trials=len(runs),
        trials_lost=lost,
        duplicate_runs=duplicates(runs),
        left_running=sum(r.info.status == "RUNNING" for r in runs),
        runs_running_after_the_kill=left,
        points_logged_twice=points_logged_twice(job, runs),
        epochs_lost_with_the_driver=logged_epochs(client, lost_with_driver),
        registered_versions=len(versions),
        seconds_to_stop=round(stopped_s, 1),
        seconds_to_recover=first_point_after(client, runs, resumed_at),
    )


BUDGET = 9  # epochs: more than the trials train before each stop, less than their 3 x 4


DIVERGING = """
from ray import tune
from sweeps.engine import main

SEARCH_SPACE = {"lr": tune.choice([1e-3, 1e4])}  # Adam at lr 1e4 turns the loss NaN at step 2
BASE_CONFIG = {"dataset": "shapes", "arch": "conv", "batch_size": 64, "iwae_samples": 4}

if __name__ == "__main__":
    main(SEARCH_SPACE, BASE_CONFIG, description="a sweep where some trials diverge")
"""


def test_a_diverging_trial_fails_alone_and_is_not_retried(tmp_path):
    (tmp_path / "shapes.py").write_text(DIVERGING)
    migrated_store(tmp_path / "mlflow.db")
    flags = ("--num-samples", "4", "--max-epochs", "2", "--grace-period", "2", "--seed", "2")
    sweep = start(tmp_path, *flags, "--name", "nan", "--search", "tpe")  # FAIL in its study
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    runs = trial_runs(tmp_path)
    diverged = [r for r in runs if r.data.params["train.lr"] == "10000.0"]
    healthy = [r for r in runs if r.data.params["train.lr"] == "0.001"]
    assert len(runs) == 4 and diverged and healthy
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    retries_that_trained = 0
    for run in diverged:
        assert run.info.status == "FAILED"
        assert "training diverged at epoch 1" in run.data.tags["vae_sweep.diverged"]
        assert "not retried" in run.data.tags["vae_sweep.error"]  # the retry did not train
        retries_that_trained += len(client.get_metric_history(run.info.run_id, "train_loss"))
    assert retries_that_trained == 0
    for run in healthy:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_bpd")]
        assert run.info.status == "FINISHED" and steps == [1, 2]
    trials = tune.ExperimentAnalysis(str(tmp_path / "ray" / "nan")).trials
    assert sorted(t.status for t in trials) == sorted(
        ["ERROR"] * len(diverged) + ["TERMINATED"] * len(healthy)
    )
    study = optuna.load_study(
        study_name="nan", storage=f"sqlite:///{tmp_path / 'ray' / 'nan' / 'optuna.db'}"
    )
    states = sorted(t.state.name for t in study.trials)
    assert states == sorted(["FAIL"] * len(diverged) + ["COMPLETE"] * len(healthy))
    assert "registered   shapes-vae-smoke version 1" in out  # 64 px: the dataset's own size
    lost = trials_lost(tmp_path, "nan", runs)
    assert lost == 0

    # --resume of the ended sweep: a trial that used up its retries stays failed, as its study
    # says, and the empty copy of a run a timed-out create_run left behind is deleted
    ended = {r.info.run_id: r.info.end_time for r in runs}
    copy = client.create_run(
        runs[0].info.experiment_id,
        tags={k: runs[0].data.tags[k] for k in (ROLE, PARENT, TRIAL_ID)},
    )
    resumed = start(tmp_path, "--resume", "--name", "nan")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert client.get_run(copy.info.run_id).info.lifecycle_stage == "deleted"
    again = trial_runs(tmp_path)
    assert {r.info.run_id: r.info.end_time for r in again} == ended  # nothing ran again
    restored = tune.ExperimentAnalysis(str(tmp_path / "ray" / "nan")).trials
    assert {t.trial_id: t.status for t in restored} == {t.trial_id: t.status for t in trials}
    study = optuna.load_study(
        study_name="nan", storage=f"sqlite:///{tmp_path / 'ray' / 'nan' / 'optuna.db'}"
    )
    assert sorted(t.state.name for t in study.trials) == states
    record(
        "diverging trials (lr 1e4: NaN at step 2)",
        test="tests/test_sweep_faults.py::test_a_diverging_trial_fails_alone_and_is_not_retried",
        trials=len(runs),
        diverged=len(diverged),
        trials_lost=lost,
        duplicate_runs=duplicates(runs),
        left_running=sum(r.info.status == "RUNNING" for r in runs),
        retries_that_trained=retries_that_trained,
    )


def test_a_disk_that_fills_up_fails_the_trial_naming_the_path(tmp_path):
    job = job_dir(tmp_path)
    # Room for what the preflight asks (two conv_bn checkpoints), then filled up mid-sweep.
    with small_disk(tmp_path / "disk", "100m") as disk:
        sweep = subprocess.Popen(
            [sys.executable, "shapes.py", "--smoke-test", "--num-samples", "1", "--name", "full"]
            + ["--max-epochs", "3", "--grace-period", "3", "--storage-path", str(disk / "ray")]
            + ["--tracking-uri", f"sqlite:///{job / 'mlflow.db'}"],
            cwd=job,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        trial = disk / "ray" / "full"
        wait_for(sweep, lambda: list(trial.glob("*/checkpoint_000000")), "the first checkpoint")
        with open(disk / "filler", "wb") as filler:  # someone else fills the disk
            try:
                while True:
                    filler.write(b"\0" * 2**20)
                    filler.flush()
            except OSError:
                pass
        out, err = sweep.communicate(timeout=600)
        (disk / "filler").unlink()
    # The driver stops too (Tune cannot save its state, or read back the error file it cut
    # short), saying why and how to go on: not a traceback.
    assert sweep.returncode == 1, err[-3000:]
    assert f"no space left on the device while writing {disk / 'ray'}" in err or (
        "no space left on the device while writing" in err and str(disk / "ray") in err
    ), err[-3000:]
    assert "then continue with --resume --name full" in err
    runs = trial_runs(job)
    assert len(runs) == 1 and runs[0].info.status == "FAILED", err[-3000:]
    error = runs[0].data.tags["vae_sweep.error"]
    assert "no space left on the device while saving the checkpoint of epoch" in error
    assert str(trial) in error and "free space there; if the sweep stops, --resume" in error
