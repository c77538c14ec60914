"""A real sweep on the built-in shapes: local Ray, Optuna + ASHA, MLflow on SQLite, the
registry, and the model pulled back by name. The script runs from a copy elsewhere, as
`ray submit` runs it."""

import os
import shutil
import subprocess
import sys

import mlflow
import numpy as np
import optuna
import pytest
from conftest import REPO
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from ray import tune

from sweeps.engine import check_space
from sweeps.registry import ModelNotFoundError, load_model, parse_ref, using_tracking_uri
from sweeps.searcher import PruningAwareOptunaSearch
from vae_core import Config, ConfigError

EPOCHS = 3


def sweep(job, *flags):
    return subprocess.run(
        [
            sys.executable,
            str(job / "shapes.py"),
            "--smoke-test",
            "--max-epochs",
            str(EPOCHS),
            "--storage-path",
            str(job / "ray"),
            *flags,
        ],
        cwd=job,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    job = tmp_path_factory.mktemp("job")
    shutil.copy(REPO / "sweeps" / "shapes.py", job / "shapes.py")  # only the file travels
    first = sweep(job, "--num-samples", "4", "--name", "first", "--seed", "0")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    uri = f"sqlite:///{job / 'mlflow.db'}"
    return job, uri, first


def runs(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("vae-sweep/shapes")
    return client, client.search_runs([experiment.experiment_id], max_results=100)


def test_one_parent_run_and_one_nested_child_per_trial(done):
    job, uri, _ = done
    client, found = runs(uri)
    parents = [r for r in found if r.data.tags.get("vae_sweep.role") == "sweep"]
    children = [r for r in found if r.data.tags.get("vae_sweep.role") == "trial"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "first"
    assert {"git_sha", "version.ray", "version.optuna", "version.mlflow"} <= set(parent.data.tags)
    assert "space.latent_dim" in parent.data.params and "base.data.dataset" in parent.data.params
    assert {"test_bpd", "test_iwae_nll", "val_bpd"} <= set(parent.data.metrics)
    sweep_files = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {
        "sweep/rate_distortion.png",
        "sweep/rate_distortion.html",
        "sweep/optimization_history.png",
    } <= sweep_files
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.run_name.startswith("train_trial_") and tags["ray.trial_id"]
        assert tags["ray.node_id"]
        assert child.info.status in ("FINISHED", "KILLED")  # none left RUNNING
        assert child.data.params["model.latent_dim"] in ("4", "8", "16", "32")
        history = client.get_metric_history(child.info.run_id, "val_bpd")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        if child.info.status == "KILLED":
            assert (
                len(history) < EPOCHS and "stopped early by ASHA" in tags["vae_sweep.stop_reason"]
            )
        else:
            assert len(history) == EPOCHS
            images = {
                a.path
                for a in client.list_artifacts(child.info.run_id, f"images/epoch_{EPOCHS:03d}")
            }
            assert f"images/epoch_{EPOCHS:03d}/reconstructions.png" in images


def test_optuna_is_told_which_trials_were_pruned(done):
    job, uri, _ = done
    storage = f"sqlite:///{job / 'ray' / 'first' / 'optuna.db'}"
    study = optuna.load_study(study_name="first", storage=storage)
    _, found = runs(uri)
    children = {
        r.data.tags["ray.trial_id"]: r
        for r in found
        if r.data.tags.get("vae_sweep.role") == "trial"
    }
    states = sorted(t.state for t in study.trials)
    killed = sum(r.info.status == "KILLED" for r in children.values())
    assert len(study.trials) == 4
    assert states.count(TrialState.PRUNED) == killed
    assert states.count(TrialState.COMPLETE) == 4 - killed
    for trial in study.trials:
        if trial.state == TrialState.PRUNED:
            assert trial.intermediate_values and max(trial.intermediate_values) < EPOCHS


def test_best_model_is_registered_and_pulled_back_by_name(done, tmp_path):
    job, uri, first = done
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    client = MlflowClient(uri)
    version = client.get_model_version_by_alias("shapes-vae", "champion")
    tags = version.tags
    assert tags["dataset"] == "shapes" and tags["image_size"] == "64"
    assert float(tags["test_bpd"]) > 0 and tags["sweep_run_id"]
    assert "registered   shapes-vae version 1 as @champion" in first.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in first.stdout

    model = load_model("shapes-vae@champion", tracking_uri=uri)
    assert not model.training and model.image_shape == (3, 64, 64)
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before  # no global left behind
    with using_tracking_uri(uri):
        served = mlflow.pyfunc.load_model("models:/shapes-vae@champion")
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before
    images = np.zeros((2, 3, 64, 64), dtype=np.uint8)
    assert served.predict(images).shape == (2, model.latent_dim)
    recon = served.predict(images, params={"output": "reconstruction"})
    assert recon.shape == (2, 3 * 64 * 64)

    cli = shutil.which("vae-sweep")
    out = subprocess.run(
        [
            cli,
            "--tracking-uri",
            uri,
            "sample",
            "shapes-vae",
            "-n",
            "4",
            "--out",
            str(tmp_path / "s.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and (tmp_path / "s.png").is_file(), out.stderr
    pulled = subprocess.run(
        [cli, "--tracking-uri", uri, "pull", "shapes-vae@champion", "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
    )
    assert pulled.returncode == 0 and (tmp_path / "m" / "checkpoint.safetensors").is_file()
    missing = subprocess.run(
        [
            cli,
            "--tracking-uri",
            uri,
            "sample",
            "shapes-vae@best",
            "--out",
            str(tmp_path / "x.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert "shapes-vae has no alias 'best': versions 1; aliases champion->1" in missing.stderr
    with pytest.raises(
        ModelNotFoundError, match="no registered model 'celeba-vae'; registered models: shapes-vae"
    ):
        load_model("celeba-vae", tracking_uri=uri)


def test_a_second_sweep_gets_a_new_version_champion_only_if_better(done):
    job, uri, _ = done
    second = sweep(job, "--num-samples", "2", "--name", "second", "--seed", "1")
    assert second.returncode == 0, second.stderr[-3000:]
    client = MlflowClient(uri)
    v1, v2 = (client.get_model_version("shapes-vae", v) for v in ("1", "2"))
    aliases = client.get_registered_model("shapes-vae").aliases
    if float(v2.tags["test_bpd"]) < float(v1.tags["test_bpd"]):
        assert aliases == {"champion": "2"} or dict(aliases) == {"champion": 2}
    else:
        assert {k: str(v) for k, v in aliases.items()} == {"champion": "1", "challenger": "2"}
    assert len(runs(uri)[1]) == 5 + 3  # two sweeps, separate parent runs


def test_searcher_tells_pruned_complete_and_failed_trials_apart(tmp_path):
    searcher = PruningAwareOptunaSearch(
        metric="val_bpd",
        mode="min",
        study_name="unit",
        max_iterations=3,
        storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}"),
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    searcher.set_search_properties("val_bpd", "min", {"x": tune.uniform(0, 1)})
    for trial_id in ("stopped", "full", "broken"):
        assert "x" in searcher.suggest(trial_id)
    searcher.on_trial_result("stopped", {"val_bpd": 5.0, "training_iteration": 1})
    searcher.on_trial_complete("stopped", {"val_bpd": 5.0, "training_iteration": 1})
    for step in (1, 2, 3):
        searcher.on_trial_result("full", {"val_bpd": 4.0 - step, "training_iteration": step})
    searcher.on_trial_complete("full", {"val_bpd": 1.0, "training_iteration": 3})
    searcher.on_trial_complete("broken", None, error=True)
    study = optuna.load_study(study_name="unit", storage=f"sqlite:///{tmp_path / 'o.db'}")
    states = {t.number: (t.state, t.value) for t in study.trials}
    assert states == {
        0: (TrialState.PRUNED, 5.0),
        1: (TrialState.COMPLETE, 1.0),
        2: (TrialState.FAIL, None),
    }


def test_a_bad_search_space_fails_before_any_trial():
    base = Config.from_dict({"dataset": "shapes"})
    with pytest.raises(
        ConfigError,
        match="search space 'latent_dim' = 0: model.latent_dim: got 0; expected an integer >= 1",
    ):
        check_space({"latent_dim": tune.choice([0, 8])}, base)
    with pytest.raises(ConfigError, match="search space 'beta' = 0.1: beta: unknown field"):
        check_space({"beta": tune.loguniform(0.1, 10)}, base)
    with pytest.raises(ValueError, match="expected a tune domain"):
        check_space({"latent_dim": [4, 8]}, base)


def test_model_references():
    assert parse_ref("celeba-vae") == ("celeba-vae", "champion")
    assert parse_ref("models:/celeba-vae@challenger") == ("celeba-vae", "challenger")
    assert parse_ref("celeba-vae/3") == ("celeba-vae", "3")


def test_a_taken_name_is_refused_before_any_trial(done):
    job, _, _ = done
    again = sweep(job, "--name", "first")
    assert again.returncode == 2
    assert "--name first: a sweep of that name exists already; pass --resume" in again.stderr
    resumed = sweep(job, "--name", "nope", "--resume")
    assert resumed.returncode == 2 and "no MLflow run of a sweep named 'nope'" in resumed.stderr


def test_random_search_walks_a_grid_without_early_stopping(tmp_path):
    """--search random --scheduler fifo: Tune's own sampling (a grid walked in full) and
    every trial to --max-epochs; no Optuna study."""
    (tmp_path / "grid.py").write_text(
        "from ray import tune\nfrom sweeps.engine import main\n"
        "main({'latent_dim': tune.grid_search([2, 4, 8]), 'likelihood': 'gaussian'},\n"
        "     {'dataset': 'shapes', 'arch': 'conv', 'batch_size': 64})\n"
    )
    result = subprocess.run(
        [sys.executable, "grid.py", "--smoke-test", "--num-samples", "1", "--name", "grid"]
        + ["--search", "random", "--scheduler", "fifo", "--storage-path", str(tmp_path / "ray")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, found = runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    trials = [r for r in found if r.data.tags.get("vae_sweep.role") == "trial"]
    assert sorted(int(r.data.params["model.latent_dim"]) for r in trials) == [2, 4, 8]
    assert all(r.info.status == "FINISHED" for r in trials)  # FIFO: none stopped early
    assert not (tmp_path / "ray" / "grid" / "optuna.db").exists()
    refused = subprocess.run(
        [sys.executable, "grid.py", "--smoke-test", "--storage-path", str(tmp_path / "ray")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and "pass --search random" in refused.stderr


def test_an_epoch_budget_stops_the_sweep_once_spent(tmp_path):
    """--epoch-budget: TPE + ASHA propose trials until the trials have trained that many epochs
    in all; the sweep then ends normally (not 'interrupted'), every run ended."""
    shutil.copy(REPO / "sweeps" / "shapes.py", tmp_path / "shapes.py")
    result = sweep(tmp_path, "--num-samples", "20", "--epoch-budget", "5", "--name", "budget")
    assert result.returncode == 0, result.stderr[-3000:]
    client, found = runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    trials = [r for r in found if r.data.tags.get("vae_sweep.role") == "trial"]
    epochs = sum(len(client.get_metric_history(r.info.run_id, "val_bpd")) for r in trials)
    assert 5 <= epochs <= 6 and len(trials) < 20  # one more report may be in flight
    assert all(r.info.status in ("FINISHED", "KILLED") for r in found)
    reasons = {r.data.tags.get("vae_sweep.stop_reason", "") for r in trials}
    assert all(r == "" or "ASHA" in r or "budget" in r or "first epoch" in r for r in reasons)
    assert "registered   shapes-vae version 1" in result.stdout
