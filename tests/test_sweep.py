"""Real sweeps on the built-in shapes: local Ray, Optuna + ASHA, MLflow on SQLite, the
registry, and the model pulled back by name; a second, worse sweep into the same model; and a
rate-distortion sweep over other data, whose Pareto front is registered under its own name.
The script runs from a copy elsewhere, as `ray submit` runs it. One sweep serves every check
that only reads its results."""

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pyarrow.parquet as pq
import pytest
from conftest import REPO, migrated_store
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from PIL import Image
from ray import tune
from servers import free_port, start_mlflow_server, stop

from sweeps import cli, lifecycle, shapes
from sweeps.finish import Candidate, non_dominated, pick
from sweeps.lifecycle import EndTrialRuns, Stops, SweepRuns, end_trial_run, epochs_spent
from sweeps.registry import (
    ModelNotFoundError,
    load_model,
    make_champion,
    parse_ref,
    using_tracking_uri,
)
from sweeps.searcher import PruningAwareOptunaSearch, tell_held_back
from sweeps.space import check_space
from sweeps.warm_start import logged_trials
from vae_core import Config, ConfigError

EPOCHS = 3
SAMPLES = 4
STOP = "vae_sweep.stop_reason"
CHROMIUM = "/usr/bin/chromium"  # Debian's: playwright drives it, no browser download


def sweep(job, *flags, script="shapes.py", smoke=True):
    return subprocess.run(
        [sys.executable, str(job / script), *(["--smoke-test"] if smoke else [])]
        + ["--max-epochs", str(EPOCHS), "--grace-period", "2"]  # ASHA's one rung: epoch 2
        + ["--storage-path", str(job / "ray"), *flags],
        cwd=job,
        capture_output=True,
        text=True,
        timeout=900,
    )


def outboxes() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("outbox-*"))


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """4 trials of TPE, one at a time (so ASHA's decisions at epoch 2 do not depend on timing)
    with seed 0, whose trials ASHA does stop: the checks on pruned trials are never vacuous."""
    job = tmp_path_factory.mktemp("job")
    shutil.copy(REPO / "sweeps" / "shapes.py", job / "shapes.py")  # only the file travels
    migrated_store(job / "mlflow.db")  # the script's default store: ./mlflow.db
    before = outboxes()
    flags = ("--num-samples", str(SAMPLES), "--max-concurrent", "1", "--name", "first")
    first = sweep(job, *flags, "--search", "tpe")
    first.leaked = outboxes() - before
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    uri = f"sqlite:///{job / 'mlflow.db'}"
    return job, uri, first


def runs(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("vae-sweep/shapes")
    return client, client.search_runs([experiment.experiment_id], max_results=100)


def trial_runs(uri, sweep_name="first"):
    client, found = runs(uri)
    parent = next(r for r in found if r.data.tags.get("vae_sweep.sweep_name") == sweep_name)
    return [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def test_one_parent_run_and_one_nested_child_per_trial(done):
    job, uri, first = done
    client, found = runs(uri)
    parents = [r for r in found if r.data.tags.get("vae_sweep.role") == "sweep"]
    children = [r for r in found if r.data.tags.get("vae_sweep.role") == "trial"]
    assert len(parents) == 1 and len(children) == SAMPLES
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "first"
    assert {"git_sha", "version.ray", "version.optuna", "version.mlflow"} <= set(parent.data.tags)
    assert parent.data.params["space.kl_weight"] == "loguniform(0.25, 4)"  # readable
    assert parent.data.params["space.latent_dim"] == "choice([16, 32])"
    assert parent.data.params["base.data.dataset"] == "shapes"
    assert parent.data.tags["vae_sweep.command"].startswith("shapes.py --smoke-test")
    assert {"test_bpd", "test_iwae_nll", "best_val_bpd"} <= set(parent.data.metrics)
    assert "val_bpd" not in parent.data.metrics  # a sort by val_bpd finds only trials
    # A local Ray: the test evaluation ran in the driver, on this (only) node, on its CPU.
    assert parent.data.tags["vae_sweep.evaluation_device"] == "cpu"
    assert parent.data.tags["vae_sweep.evaluated_on"] == children[0].data.tags["ray.node_id"]
    sweep_files = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {
        "sweep/rate_distortion.png",
        "sweep/plots.html",
        "sweep/optimization_history.png",
    } <= sweep_files
    page = client.download_artifacts(parent.info.run_id, "sweep/plots.html", str(job))
    html = Path(page).read_text()
    assert "rate-distortion" in html and "optimization history" in html
    assert not re.search(r"<script[^>]*\bsrc=", html)  # plotly.js inside: it draws offline
    best = {a.path for a in client.list_artifacts(parent.info.run_id, "best")}
    grids = {"reconstructions.png", "samples.png", "interpolations.png"}  # drawn by the task
    assert best == {f"best/{name}" for name in grids}
    png = client.download_artifacts(parent.info.run_id, "best/reconstructions.png", str(job))
    width, height = Image.open(png).size
    assert width == height and (width - 9 * 2) % 8 == 0  # 8 x 8 tiles: 32 images, 32 recons
    # Each trial its own seed, the sweep's (0) plus its index: no two train bit-identically.
    assert sorted(int(c.data.params["train.seed"]) for c in children) == list(range(SAMPLES))
    for child in children:
        assert {"val_bpd_calibrated", "effective_beta"} <= set(child.data.metrics)
    pruned = [c for c in children if c.data.tags["vae_sweep.outcome"] == "pruned"]
    assert pruned, "ASHA stopped no trial of this seed: the checks below would be vacuous"
    # Named by index and sampled values, in the space's order: `02 z16 beta1.23 sigma0.0456
    # learned`; unique, and in the order the trials were proposed.
    names = sorted(c.info.run_name for c in children)
    assert [n.split()[0] for n in names] == [f"{i:02d}" for i in range(SAMPLES)]
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["ray.trial_id"]
        number = r"\d+(\.\d+)?(e-?\d+)?"
        assert re.fullmatch(
            rf"\d\d z(16|32) beta{number} sigma{number} (fixed|learned)", child.info.run_name
        ), child.info.run_name
        params = child.data.params
        assert f"z{params['model.latent_dim']} beta{float(params['train.kl_weight']):.3g}" in (
            child.info.run_name
        )
        assert tags["ray.node_id"] and tags["vae_sweep.device"] == "cpu"
        assert (child.data.params["resources.cpu"], child.data.params["resources.gpu"]) == (
            "1.0",
            "0.0",
        )
        # Pruned is not crashed: FINISHED (a green tick in the UI), the outcome a tag
        assert child.info.status == "FINISHED"  # none left RUNNING, none failed
        assert child.data.params["model.latent_dim"] in ("16", "32")
        history = client.get_metric_history(child.info.run_id, "val_bpd")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        note = tags["mlflow.note.content"]  # the run's description
        if tags["vae_sweep.outcome"] == "pruned":
            assert len(history) == 2  # ASHA's one rung, at the grace period
            assert tags["vae_sweep.stop_reason"] == "stopped early by ASHA after epoch 2"
            assert note.startswith("Pruned (not a crash): stopped early by ASHA after epoch 2")
        else:
            assert tags["vae_sweep.outcome"] == "completed"
            assert f"Completed: trained all {EPOCHS} epochs; its best val_bpd " in note
            assert len(history) == EPOCHS
            # image_every is 1 in a smoke test: every epoch's grids, for the UI's image
            # charts (MLflow's layout of log_image(key=..., step=...)), and the latest at
            # fixed paths for Compare
            assert tags["mlflow.loggedImages"] == "True"
            images = [a.path for a in client.list_artifacts(child.info.run_id, "images")]
            for key in ("reconstructions", "samples", "interpolations"):
                steps = [
                    int(path.split("+step+")[1].split("+")[0])
                    for path in images
                    if path.startswith(f"images/{key}+step+") and path.endswith(".png")
                ]
                assert sorted(steps) == list(range(1, EPOCHS + 1)), images
                assert sum(p.endswith("+compressed.webp") and f"/{key}+" in p for p in images) == (
                    EPOCHS
                )
            grids = {a.path for a in client.list_artifacts(child.info.run_id, "grids")}
            assert grids == {
                f"grids/{k}.png" for k in ("reconstructions", "samples", "interpolations")
            }


def test_the_sweep_reads_at_a_glance_in_mlflow(done):
    """What the UI shows: descriptions everywhere, the best trial marked, the registered
    version's source the trial that trained it, the logged model registered with its params."""
    _, uri, _ = done
    client, found = runs(uri)
    experiment = client.get_experiment_by_name("vae-sweep/shapes")
    # opens on its training runs, not MLflow 3's GenAI view; says what val_bpd is
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "val_bpd is the negative ELBO" in experiment.tags["mlflow.note.content"]
    parent = next(r for r in found if r.data.tags.get("vae_sweep.sweep_name") == "first")
    children = trial_runs(uri)
    best = [c for c in children if c.data.tags.get("vae_sweep.best") == "true"]
    assert len(best) == 1 and parent.data.tags["best_trial_run_id"] == best[0].info.run_id
    lowest = {
        c.info.run_id: min(m.value for m in client.get_metric_history(c.info.run_id, "val_bpd"))
        for c in children
    }
    assert parent.data.metrics["best_val_bpd"] == pytest.approx(lowest[best[0].info.run_id])
    assert lowest[best[0].info.run_id] == min(lowest.values())
    assert (
        best[0].data.tags["mlflow.note.content"].startswith("Best trial of sweep first (val_bpd ")
    )
    first_line, second_line = parent.data.tags["mlflow.note.content"].split("\n")
    pruned = sum(c.data.tags["vae_sweep.outcome"] == "pruned" for c in children)
    assert first_line.startswith(f"Sweep first: {SAMPLES} trials (") and (
        f"{pruned} pruned by ASHA" in first_line
    )
    assert " of `shapes.py --smoke-test --max-epochs 3 " in first_line
    assert first_line.endswith("--name first --search tpe`.")
    assert second_line.startswith(f"Best: trial {best[0].info.run_name}, val_bpd ")
    assert "registered as shapes32-vae-smoke version 1 (@champion)" in second_line

    version = client.get_model_version("shapes32-vae-smoke", "1")
    assert version.run_id == best[0].info.run_id  # the trial's run, not the sweep's
    assert version.description.startswith(f"Trial {best[0].info.run_name} of sweep first, ")
    assert "Pull it: vae-sweep pull shapes32-vae-smoke/1 --out model/" in version.description
    logged = client.get_logged_model(version.model_id or version.source.removeprefix("models:/"))
    assert logged.source_run_id == best[0].info.run_id
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": "shapes32-vae-smoke", "version": "1"}
    ]
    assert logged.params["model.latent_dim"] == best[0].data.params["model.latent_dim"]
    assert "space.latent_dim" not in logged.params  # the trial's own, not the sweep's


def test_no_outbox_folder_is_left_behind(done):
    assert done[2].leaked == set()  # nothing waited for the server: no spool was even made


def test_optuna_is_told_which_trials_were_pruned(done):
    job, uri, _ = done
    storage = f"sqlite:///{job / 'ray' / 'first' / 'optuna.db'}"
    study = optuna.load_study(study_name="first", storage=storage)
    killed = sum(r.data.tags["vae_sweep.outcome"] == "pruned" for r in trial_runs(uri))
    states = [t.state for t in study.trials]
    assert len(study.trials) == SAMPLES and killed > 0
    assert states.count(TrialState.PRUNED) == killed
    assert states.count(TrialState.COMPLETE) == SAMPLES - killed
    for trial in study.trials:
        if trial.state == TrialState.PRUNED:
            assert sorted(trial.intermediate_values) == [1, 2]


def test_warm_start_starts_tpe_from_the_earlier_sweep_s_trials(done):
    """--warm-start first: the new sweep's study begins with the first sweep's trials, as they
    ended (complete or pruned), and its own trial is number 0 (named 00, seed 0) after them.
    Its own MLflow store, so that the other tests' counts of runs stay as they are."""
    job, _, _ = done
    store = job / "warm.db"
    migrated_store(store)
    flags = ("--num-samples", "1", "--name", "warm", "--warm-start", "first")
    result = sweep(job, *flags, "--tracking-uri", f"sqlite:///{store}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"starting TPE from {SAMPLES} trials of sweep first (its Optuna study)" in result.stderr
    first, warm = (
        optuna.load_study(study_name=n, storage=f"sqlite:///{job / 'ray' / n / 'optuna.db'}")
        for n in ("first", "warm")
    )
    told = [(t.params, t.values, t.state) for t in warm.trials[:SAMPLES]]
    assert told == [(t.params, t.values, t.state) for t in first.trials]
    assert len(warm.trials) == SAMPLES + 1
    (trial,) = trial_runs(f"sqlite:///{store}", "warm")
    assert trial.info.run_name.startswith("00 ") and trial.data.params["train.seed"] == "0"
    parent = MlflowClient(f"sqlite:///{store}").get_run(trial.data.tags["mlflow.parentRunId"])
    assert parent.data.params["warm_start"] == "first"
    missing = sweep(job, "--name", "cold", "--warm-start", "nosuch")
    assert missing.returncode == 2
    assert "--warm-start nosuch: no sweep of that name, neither its Optuna study nor" in (
        missing.stderr
    )
    assert not (job / "ray" / "cold").exists()  # refused before anything started


def test_a_sweep_without_a_study_warm_starts_from_its_mlflow_runs(done):
    """A random sweep keeps no study: its MLflow runs tell TPE the same trials, states, values
    and curves as the study of the same sweep does."""
    job, uri, _ = done
    storage = f"sqlite:///{job / 'ray/first/optuna.db'}"
    study = optuna.load_study(study_name="first", storage=storage)
    logged, left_out = logged_trials(uri, "first", shapes.SEARCH_SPACE, "val_bpd", ["val_bpd"])
    assert left_out == 0 and len(logged) == SAMPLES

    def kept(t):
        return sorted(t.params.items()), t.state, t.values

    pairs = zip(sorted(logged, key=kept), sorted(study.trials, key=kept), strict=True)
    for from_mlflow, from_study in pairs:
        assert kept(from_mlflow) == kept(from_study)
        # the same curve (the study misses a complete trial's last epoch: Tune tells it apart)
        assert from_study.intermediate_values.items() <= from_mlflow.intermediate_values.items()
    assert {t.state for t in logged} == {TrialState.COMPLETE, TrialState.PRUNED}
    with pytest.raises(ValueError, match="--warm-start first: that sweep's objective was val_bpd"):
        logged_trials(uri, "first", shapes.SEARCH_SPACE, "val_mig", ["val_mig"])


def test_best_model_is_registered_and_pulled_back_by_name(done, tmp_path, capsys):
    job, uri, first = done
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    client = MlflowClient(uri)
    version = client.get_model_version_by_alias("shapes32-vae-smoke", "champion")
    tags = version.tags
    assert tags["dataset"] == "shapes" and tags["image_size"] == "32"
    assert tags["vae_sweep.key"] == "shapes/32px/3ch/center/limit256/val0.1/continuous"
    assert float(tags["val_bpd_calibrated"]) <= float(tags["val_bpd"])
    assert float(tags["test_bpd"]) > 0 and tags["sweep_run_id"]
    assert "registered   shapes32-vae-smoke version 1 as @champion" in first.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in first.stdout
    assert "then http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning" in (
        first.stdout
    )

    model = load_model("shapes32-vae-smoke@champion", tracking_uri=uri)
    assert not model.training and model.image_shape == (3, 32, 32)
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before  # no global left behind
    with using_tracking_uri(uri):
        served = mlflow.pyfunc.load_model("models:/shapes32-vae-smoke@champion")
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before
    images = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32), dtype=np.uint8)
    z = served.predict(images)
    assert z.shape == (2, model.latent_dim)
    recon = served.predict(images, params={"output": "reconstruction"})
    assert recon.shape == (2, 3, 32, 32) and 0 <= recon.min() <= recon.max() <= 1  # images
    # A stack of PIL images is channels-last: taken as it is, answered in its layout
    pil_stack = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(served.predict(pil_stack), z, rtol=1e-5)
    again = served.predict(pil_stack, params={"output": "reconstruction"})
    np.testing.assert_allclose(again, recon.transpose(0, 2, 3, 1), rtol=1e-5)
    with pytest.raises(
        Exception, match=r"expected uint8 images \(N, 3, 32, 32\) or \(N, 32, 32, 3\)"
    ):
        served.predict(np.zeros((2, 3, 28, 28), dtype=np.uint8))

    cli.main(
        [
            "--tracking-uri",
            uri,
            "sample",
            "shapes32-vae-smoke",
            "-n",
            "4",
            "--out",
            f"{tmp_path}/s.jpg",
        ]
    )
    assert Image.open(tmp_path / "s.jpg").format == "JPEG"  # what its name says
    cli.main(
        ["--tracking-uri", uri, "pull", "shapes32-vae-smoke@champion", "--out", f"{tmp_path}/m"]
    )
    assert (tmp_path / "m" / "checkpoint.safetensors").is_file()
    with pytest.raises(SystemExit) as exited:
        cli.main(
            [
                "--tracking-uri",
                uri,
                "sample",
                "shapes32-vae-smoke@best",
                "--out",
                f"{tmp_path}/x.png",
            ]
        )
    assert exited.value.code == 2
    message = capsys.readouterr().err
    assert "shapes32-vae-smoke has no alias 'best': versions 1; aliases champion->1" in message
    with pytest.raises(
        ModelNotFoundError,
        match="no registered model 'celeba-vae'; registered models: shapes32-vae-smoke",
    ):
        load_model("celeba-vae", tracking_uri=uri)


WORSE = """
from ray import tune
from sweeps.engine import main
from shapes import BASE_CONFIG

# lr 1e-7: an epoch of Adam leaves the decoder where it started, far worse than any real trial.
main({"latent_dim": tune.grid_search([2, 4, 8]), "lr": 1e-7}, BASE_CONFIG)
"""


@pytest.fixture(scope="module")
def second(done):
    """A second sweep into the same store: the default random search, --scheduler fifo, over a
    grid, its best trial the one of highest val_mig (a score, maximised)."""
    job, uri, _ = done
    (job / "worse.py").write_text(WORSE)
    flags = ("--num-samples", "1", "--max-epochs", "1", "--name", "second")
    flags += ("--scheduler", "fifo", "--objective", "val_mig")
    result = sweep(job, *flags, script="worse.py")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_worse_second_sweep_gets_a_new_version_and_the_champion_stays(done, second):
    job, uri, _ = done
    client = MlflowClient(uri)
    v1, v2 = (client.get_model_version("shapes32-vae-smoke", v) for v in ("1", "2"))
    assert float(v2.tags["val_bpd"]) > float(v1.tags["val_bpd"])  # validation decides
    aliases = client.get_registered_model("shapes32-vae-smoke").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "1", "challenger": "2"}
    assert (
        "registered   shapes32-vae-smoke version 2 as @challenger (champion stays version 1)"
        in (second.stdout)
    )
    assert len(runs(uri)[1]) == SAMPLES + 1 + 3 + 1  # two sweeps, separate parent runs


def test_random_search_walks_a_grid_without_early_stopping(done, second):
    """Random search, --scheduler fifo: Tune's own sampling (a grid walked in full, once per
    --num-samples) and every trial to --max-epochs; no Optuna study, but Optuna's history of
    its trials on the parent run all the same."""
    job, uri, _ = done
    trials = trial_runs(uri, "second")
    assert sorted(int(r.data.params["model.latent_dim"]) for r in trials) == [2, 4, 8]
    assert all(r.info.status == "FINISHED" for r in trials)  # FIFO: none stopped early
    assert not (job / "ray" / "second" / "optuna.db").exists()
    # Tune's own trial counter seeds them: the grid's three points, three seeds.
    assert sorted(int(r.data.params["train.seed"]) for r in trials) == [0, 1, 2]
    parent = next(r for r in runs(uri)[1] if r.data.tags.get("vae_sweep.sweep_name") == "second")
    assert parent.data.params["objective"] == "val_mig"
    best = max(trials, key=lambda r: r.data.metrics["val_mig"])  # maximised, not minimised
    assert parent.data.tags["best_trial_run_id"] == best.info.run_id
    drawn = {f.path for f in MlflowClient(uri).list_artifacts(parent.info.run_id, "sweep")}
    assert "sweep/optimization_history.png" in drawn


SMALLER = """
from ray import tune
from sweeps.engine import main
from shapes import BASE_CONFIG, SEARCH_SPACE

main(SEARCH_SPACE, {**BASE_CONFIG, "limit": 600, "iwae_samples": 2})
"""
FRONT = "shapes32-limit600-vae"


@pytest.fixture(scope="module")
def front(done, second):
    """Not a smoke test: a rate-distortion sweep over 600 images a split (another
    comparability key) into the same store, Optuna's multi-objective TPE with FIFO."""
    job, uri, _ = done
    (job / "smaller.py").write_text(SMALLER)
    flags = ("--num-samples", "4", "--max-concurrent", "2", "--max-epochs", "1", "--name", "rd")
    flags += ("--search", "tpe")  # Optuna's multi-objective TPE
    flags += ("--objective", "rate-distortion", "--pick", "max-rate=1000")  # any rate: the
    # member of lowest distortion, picked through the sweep as a user types it
    result = sweep(job, *flags, script="smaller.py", smoke=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(uri)
    parent = next(r for r in runs(uri)[1] if r.data.tags.get("vae_sweep.sweep_name") == "rd")
    table = json.loads(
        Path(
            client.download_artifacts(parent.info.run_id, "sweep/pareto_front.json", str(job))
        ).read_text()
    )
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    return client, parent, trial_runs(uri, "rd"), rows, result.stdout


def test_a_sweep_over_other_data_registers_under_its_own_name(done, front):
    """The smoke model's champion is not compared with the real sweep's models, nor touched."""
    client = front[0]
    names = {m.name: m for m in client.search_registered_models()}
    assert set(names) == {"shapes32-vae-smoke", FRONT}
    assert (
        names[FRONT].tags["vae_sweep.key"] == "shapes/32px/3ch/center/limit600/val0.1/continuous"
    )
    assert names["shapes32-vae-smoke"].tags["vae_sweep.key"] == (
        "shapes/32px/3ch/center/limit256/val0.1/continuous"
    )
    assert {k: str(v) for k, v in names["shapes32-vae-smoke"].aliases.items()} == {
        "champion": "1",
        "challenger": "2",
    }


def test_rate_distortion_searches_two_objectives_without_early_stopping(done, front):
    job = done[0]
    _, parent, trials, _, _ = front
    study = optuna.load_study(study_name="rd", storage=f"sqlite:///{job / 'ray/rd/optuna.db'}")
    assert len(study.directions) == 2 and len(study.trials) == 4
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)  # FIFO
    assert parent.data.params["objective"] == "rate-distortion"


def test_the_front_is_on_the_parent_run_and_in_the_registry(done, front):
    job = done[0]
    client, parent, trials, rows, stdout = front
    # The members are exactly the non-dominated trials, on what each reported last.
    points = [(r.data.metrics["val_kl"], r.data.metrics["val_mse"]) for r in trials]
    expected = sorted(points[i] for i in non_dominated(points))
    got = sorted((row["val_kl"], row["val_mse"]) for row in rows)
    assert len(got) == len(expected)
    assert all(a == pytest.approx(b) for a, b in zip(got, expected, strict=True))
    versions = client.search_model_versions(f"name = '{FRONT}'")
    assert sorted(str(v.version) for v in versions) == sorted(str(r["version"]) for r in rows)
    for v in versions:
        assert v.tags["vae_sweep.front"].startswith("rate ") and v.tags["sweep_run_id"]
    champion = client.get_registered_model(FRONT).aliases["champion"]
    picked = min(rows, key=lambda row: row["val_mse"])  # --pick max-rate=1000: all within
    assert str(champion) == str(picked["version"])
    said = client.get_model_version(FRONT, str(champion)).tags["vae_sweep.picked"]
    assert "max-rate" in said and said in stdout
    assert f"front        {len(rows)} members" in stdout
    png = client.download_artifacts(parent.info.run_id, "sweep/rate_distortion.png", str(job))
    assert Image.open(png).size[0] > 400
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert "sweep/optuna_pareto_front.png" in files


def test_pick_takes_the_lowest_distortion_within_the_rate_and_the_registry_follows(done, front):
    uri = done[1]
    client, _, _, rows, _ = front
    members = [Candidate(None, None, row) for row in rows]  # by increasing rate
    chosen, note = pick(members, max(row["val_kl"] for row in rows))
    assert chosen.metrics == min(rows, key=lambda row: row["val_mse"]) and "max-rate" in note
    best, _ = pick(members, None)  # no --pick: the best val_bpd
    assert best.metrics == min(rows, key=lambda row: row["val_bpd"])
    lowest, note = pick(members, rows[0]["val_kl"] / 2)  # nothing within: the lowest rate
    assert lowest.metrics == rows[0] and "no member has val_kl <=" in note
    registered = make_champion(uri, FRONT, str(rows[0]["version"]), note)
    assert str(client.get_registered_model(FRONT).aliases["champion"]) == registered.version
    assert client.get_model_version(FRONT, registered.version).tags["vae_sweep.picked"] == note


def test_settling_a_trial_that_left_nothing_pending_opens_no_checkpoint(done, tmp_path):
    """An ended trial whose last report said nothing waits for the server: its run is ended
    without opening its checkpoint (with s3:// storage, a download per trial)."""
    job, uri, _ = done
    shutil.copytree(job / "ray" / "first", tmp_path / "first")
    for checkpoint in (tmp_path / "first").glob("*/checkpoint_*"):
        shutil.rmtree(checkpoint)  # opening one now would fail
    trials = tune.ExperimentAnalysis(str(tmp_path / "first")).trials
    assert len(trials) == SAMPLES and all(t.checkpoint is not None for t in trials)
    client = MlflowClient(uri)
    for trial in trials:
        assert trial.last_result["mlflow_pending"] == 0
        counters = end_trial_run(client, trial, "KILLED", {})
        assert counters == {"mlflow_pending": 0, "mlflow_late": 0, "mlflow_dropped": 0}
    logged = [client.get_metric_history(r.info.run_id, "val_bpd") for r in trial_runs(uri)]
    assert epochs_spent(trials) == sum(map(len, logged))


def test_a_trial_s_stop_reason_names_what_stopped_it(done):
    """ASHA, the epoch budget, the time budget, or the sweep's end (FIFO), told apart for a
    trial of the shared sweep that ended after epoch 2."""
    job, _, _ = done
    trials = tune.ExperimentAnalysis(str(job / "ray" / "first")).trials
    stopped = next(t for t in trials if t.last_result["epoch"] < EPOCHS)

    def reason(stops: Stops, spent: int = 0, seconds: float = 0.0) -> str:
        status, tags = stops.outcome(stopped, spent, seconds)
        assert status == "FINISHED"  # stopped by design: not a crash, not interrupted
        assert tags["vae_sweep.outcome"] == ("pruned" if "ASHA" in tags[STOP] else "stopped")
        return tags[STOP]

    assert reason(Stops(EPOCHS, "asha")) == "stopped early by ASHA after epoch 2"
    assert reason(Stops(EPOCHS, "asha", epoch_budget=5), spent=5) == (
        "stopped after epoch 2: the sweep's epoch budget (5) was spent"
    )
    assert reason(Stops(EPOCHS, "fifo", time_budget=30.0), seconds=31.0) == (
        "stopped after epoch 2: the sweep's time budget (30 s) ran out"
    )
    assert reason(Stops(EPOCHS, "fifo")) == "stopped after epoch 2: the sweep ended"
    finished = next(t for t in trials if t.last_result["epoch"] == EPOCHS)
    status, tags = Stops(EPOCHS, "asha", 1, 1.0).outcome(finished, 99, 99.0)
    assert status == "FINISHED" and tags["vae_sweep.outcome"] == "completed" and STOP not in tags


def test_a_time_budget_stops_a_real_sweep_and_says_so(tmp_path):
    """--time-budget: Tune stops starting and running trials once it is spent; the sweep
    still ends FINISHED, registers its best, and the runs cut short say the budget ran out."""
    shutil.copy(REPO / "sweeps" / "shapes.py", tmp_path / "shapes.py")
    uri = migrated_store(tmp_path / "mlflow.db")
    flags = ("--num-samples", "50", "--max-concurrent", "1", "--name", "timed")
    result = sweep(tmp_path, *flags, "--time-budget", "20", "--scheduler", "fifo")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = trial_runs(uri, "timed")
    assert 0 < len(trials) < 50 and all(r.info.status == "FINISHED" for r in trials)
    reasons = [r.data.tags.get(STOP, "") for r in trials]
    assert any(reason.endswith("the sweep's time budget (20 s) ran out") for reason in reasons)
    assert "registered" in result.stdout


def test_a_stop_reason_is_decided_when_tune_ends_the_trial_not_at_settle(done):
    """A trial ASHA pruned at epoch 2 while the tracking server was away is settled at the
    sweep's end, when the epoch budget is spent: its run must still say ASHA stopped it. The
    reason is decided when Tune ends the trial, and survives a driver's restart (Tune saves
    and restores the callback's state)."""
    job, _, _ = done
    trials = tune.ExperimentAnalysis(str(job / "ray" / "first")).trials
    pruned = next(t for t in trials if t.last_result["epoch"] < EPOCHS)
    stops = Stops(EPOCHS, "asha", epoch_budget=pruned.last_result["epoch"] + 1)
    away = f"http://127.0.0.1:{free_port()}"  # nothing listens: the server is away
    callback = EndTrialRuns(away, stops)
    lifecycle.DECIDED.clear()
    callback.on_trial_complete(0, [pruned], pruned)  # the budget not yet spent then
    state = pickle.loads(pickle.dumps(callback.get_state()))  # as Tune saves it
    lifecycle.DECIDED.clear()  # a new driver, on --resume
    EndTrialRuns(away, stops).set_state(state)
    status, tags = SweepRuns._outcome(pruned, stops, spent=10**6, seconds=0.0)
    assert (status, tags[STOP]) == ("FINISHED", "stopped early by ASHA after epoch 2")
    # Without the decision, the totals at settle time would have said otherwise:
    assert "epoch budget" in stops.outcome(pruned, 10**6, 0.0)[1][STOP]
    lifecycle.DECIDED.clear()


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
    # As Tune calls it: the result that makes ASHA stop a trial comes only with its completion.
    searcher.on_trial_result("stopped", {"val_bpd": 6.0, "training_iteration": 1})
    searcher.on_trial_complete("stopped", {"val_bpd": 5.0, "training_iteration": 2})
    for step in (1, 2, 3):
        searcher.on_trial_result("full", {"val_bpd": 4.0 - step, "training_iteration": step})
    searcher.on_trial_complete("full", {"val_bpd": 1.0, "training_iteration": 3})
    searcher.on_trial_complete("broken", None, error=True)
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune's last save: held back until then
    tell_held_back("unit", f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.load_study(study_name="unit", storage=f"sqlite:///{tmp_path / 'o.db'}")
    states = {t.number: (t.state, t.value) for t in study.trials}
    assert study.trials[0].intermediate_values == {1: 6.0, 2: 5.0}
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


def test_two_first_sweeps_create_their_experiment_once(tmp_path):
    """Two sweeps starting together against a fresh store both find no experiment and both
    create it: the one that comes second takes the other's."""
    import threading

    uri = migrated_store(tmp_path / "mlflow.db")
    found, errors = [], []
    barrier = threading.Barrier(6)

    def start(n: int) -> None:
        runs = SweepRuns(uri, "vae-sweep/race", f"sweep-{n}")
        try:
            runs.look_up(resume=False)
            barrier.wait()
            runs.open({}, {}, {})
            found.append(runs.experiment_id)
        except Exception as err:  # noqa: BLE001 - reported below, by type and message
            errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=start, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(found) == 6 and len(set(found)) == 1


def test_vae_sweep_list_and_show_read_what_the_sweep_left(done, capsys):
    _, uri, _ = done
    assert cli.main(["list", "--tracking-uri", uri]) == 0
    listed = capsys.readouterr().out
    row = next(line for line in listed.splitlines() if line.startswith("│ first "))
    assert "vae-sweep/shapes" in row and "FINISHED" in row and f" {SAMPLES}: " in row
    assert "pruned" in row and "val_bpd " in row and "shapes32-vae-smoke/1 @champion" in row
    assert "unknown" not in listed  # every trial of every sweep here says how it ended
    assert cli.main(["show", "first", "--tracking-uri", uri, "--top", "3"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("Sweep first: 4 trials (")
    assert f"{SAMPLES} trials of first, by their best val_bpd on validation (the best 3)" in shown
    children = sorted(trial_runs(uri), key=lambda r: r.data.tags.get("vae_sweep.best", ""))
    best = children[-1]
    assert best.data.tags["vae_sweep.best"] == "true"
    rows = [line for line in shown.splitlines() if re.search(r"│ \d\d z", line)]
    assert len(rows) == 3 and f"{best.info.run_name} *" in rows[0]  # the best first, marked
    with pytest.raises(SystemExit) as missing:
        cli.main(["show", "no-such-sweep", "--tracking-uri", uri])
    said = capsys.readouterr().err
    assert missing.value.code == 2 and "no sweep named 'no-such-sweep'; sweeps: " in said
    assert "first" in said.split("sweeps: ")[1]


def test_reading_commands_never_create_a_store(tmp_path, capsys):
    absent = tmp_path / "mlflow.db"
    for command in (["list"], ["show", "x"], ["sample", "shapes-vae", "--out", "s.png"]):
        with pytest.raises(SystemExit) as failed:
            cli.main([*command, "--tracking-uri", f"sqlite:///{absent}"])
        assert failed.value.code == 2
        assert f"no MLflow store at {absent}" in capsys.readouterr().err
    assert not absent.exists()
    with pytest.raises(SystemExit):  # a picture's format from its suffix, checked first
        cli.main(
            ["sample", "m", "--out", str(tmp_path / "s.gif"), "--tracking-uri", "sqlite:///x"]
        )
    assert "expected a file ending in .png, .jpg, .jpeg, .webp" in capsys.readouterr().err


def test_reconstruct_and_encode_cut_images_as_the_model_was_trained(done, tmp_path, capsys):
    _, uri, _ = done
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # wide photos: how they are cut square matters
        Image.fromarray(rng.integers(0, 255, (40, 90, 3), dtype=np.uint8)).save(
            folder / f"{i}.jpg"
        )
    flags = ["--tracking-uri", uri, "--images", str(folder)]
    model = load_model("shapes32-vae-smoke", tracking_uri=uri)
    assert (
        cli.main(["encode", "shapes32-vae-smoke", *flags, "--out", f"{tmp_path}/z.parquet"]) == 0
    )
    assert f"wrote encode of 3 images ({model.crop} crop)" in capsys.readouterr().err
    table = pq.read_table(tmp_path / "z.parquet")
    assert table.column_names == ["file", *(f"z_{j}" for j in range(model.latent_dim))]
    assert table.num_rows == 3
    out = tmp_path / "r.png"
    assert (
        cli.main(
            ["reconstruct", "shapes32-vae-smoke", *flags, "--crop", "none", "--out", str(out)]
        )
        == 0
    )
    assert "wrote reconstruct of 3 images (none crop)" in capsys.readouterr().err
    assert Image.open(out).format == "PNG"


SCREENSHOTS = os.environ.get("VAE_SWEEP_SCREENSHOTS")  # a folder to keep them in, to look at


def test_the_mlflow_ui_shows_the_sweep_a_newcomer_can_read(done, tmp_path):
    """`mlflow server` on the finished sweep's store, in a real browser (Debian's chromium,
    driven by playwright): the trials under their sweep by name, a trial's description and
    image charts, the model version's source trial."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    job, uri, _ = done
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("vae-sweep/shapes").experiment_id
    children = trial_runs(uri)
    best = next(c for c in children if c.data.tags.get("vae_sweep.best") == "true")
    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_mlflow_server(job, port)
    base = f"http://127.0.0.1:{port}/#"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})

            def visit(path: str, shot: str, *texts: str) -> str:
                page.goto(f"{base}{path}")
                for text in texts:
                    page.get_by_text(text, exact=False).first.wait_for(timeout=60_000)
                page.wait_for_timeout(1500)  # charts and images settle
                page.screenshot(path=str(shots / f"{shot}.png"))
                return page.inner_text("body")

            # The summary's link opens the runs (MLflow 3 starts in its GenAI view), sweeps
            # first; a sweep's + shows its trials, by name, all FINISHED (pruned ones too)
            visit(f"/experiments/{experiment}/runs?workflowType=machine_learning",
                  "experiment", "first")  # fmt: skip
            row = page.get_by_role("row").filter(has=page.get_by_text("first", exact=True))
            row.first.get_by_role("button").first.click()
            for child in children:
                page.get_by_text(child.info.run_name[:12]).first.wait_for(timeout=30_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "experiment_expanded.png"))

            parent = next(r for r in runs(uri)[1] if r.info.run_name == "first")
            body = visit(f"/experiments/{experiment}/runs/{parent.info.run_id}", "parent",
                         "Sweep first:")  # fmt: skip
            assert "best_val_bpd" in body

            body = visit(f"/experiments/{experiment}/runs/{best.info.run_id}", "trial",
                         "Best trial of sweep first")  # fmt: skip
            assert best.info.run_name in body
            # Its latest grids at fixed paths (the same for every trial: Compare shows them)
            visit(f"/experiments/{experiment}/runs/{best.info.run_id}/artifacts/grids/"
                  "reconstructions.png", "trial_grids", "reconstructions.png")  # fmt: skip
            page.wait_for_function(  # the grid drawn (8 tiles of 32 px: wider than 100)
                "() => [...document.images].some(i => i.complete && i.naturalWidth > 100)"
            )

            body = visit("/models/shapes32-vae-smoke/versions/1", "model_version",
                         f"Trial {best.info.run_name}")  # fmt: skip
            assert best.info.run_name in body  # the source run, by its name
            browser.close()
    finally:
        stop(server)


def test_optuna_dashboard_serves_the_sweep_s_study(done, tmp_path):
    """README's command: `optuna-dashboard sqlite:///ray_results/<sweep>/optuna.db`."""
    job, _, _ = done
    port = free_port()
    study = f"sqlite:///{job / 'ray' / 'first' / 'optuna.db'}"
    exe = Path(sys.executable).with_name("optuna-dashboard")
    log = open(tmp_path / "dashboard.log", "w")
    server = subprocess.Popen(
        [str(exe), study, "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as answer:
                    studies = json.loads(answer.read())["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "dashboard.log"
                ).read_text()[-2000:]
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == ["first"]
        assert studies[0]["directions"] == ["minimize"]
    finally:
        stop(server)
