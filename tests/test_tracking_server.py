"""The team set-up, for real on one machine: PostgreSQL started by the test, `mlflow server`
on it with basic-auth and proxied artifacts, started by docker/tracking-server.sh (the entrypoint
of the tracking-server image), two sweeps at once that log and register there with credentials
from the environment, and `vae-sweep pull` over HTTP. Wrong passwords are refused, and so are
missing or short server secrets.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import REPO, in_process
from mlflow.tracking import MlflowClient
from ray import tune
from record import record
from servers import ADMIN_PASSWORD as PASSWORD
from servers import SERVER_SCRIPT as SCRIPT
from servers import script_env, team_server

from sweeps import cli


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """The team server (tests/servers.py), on the module's PostgreSQL (conftest.py)."""
    with team_server(postgres, tmp_path_factory.mktemp("server")) as url:
        yield url


def with_credentials(password):
    return {
        **os.environ,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": password,
    }


def test_two_sweeps_at_once_log_and_register_on_the_server_and_pull_fetches_over_http(
    server, tmp_path, monkeypatch, capsys
):
    """Two sweeps started together against the team server (PostgreSQL, basic-auth, proxied
    artifacts), into one experiment and one registered model: their runs, Optuna studies and
    trials stay apart, the champion ends on the better model; pull works with the password
    and is refused without it."""
    shutil.copy(REPO / "sweeps" / "shapes.py", tmp_path / "shapes.py")
    sweeps = {
        name: subprocess.Popen(
            [sys.executable, "shapes.py", "--smoke-test", "--name", name, "--seed", seed]
            + ["--search", "tpe"]  # a study each
            + [
                "--max-epochs",
                "1",
                "--tracking-uri",
                server,
                "--storage-path",
                str(tmp_path / "ray"),
            ],
            cwd=tmp_path,
            env=with_credentials(PASSWORD),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, seed in (("alpha", "1"), ("beta", "2"))
    }
    outs = {}
    for name, sweep in sweeps.items():
        outs[name], err = sweep.communicate(timeout=900)
        assert sweep.returncode == 0, f"{name}: {err[-3000:]}"
    assert any("as @champion" in out for out in outs.values())

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("vae-sweep/shapes")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    parents = {
        r.data.tags["vae_sweep.sweep_name"]: r
        for r in runs
        if "vae_sweep.sweep_name" in r.data.tags
    }
    assert sorted(parents) == ["alpha", "beta"]
    wrong = duplicated = 0
    for name, parent in parents.items():
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        saved = tune.ExperimentAnalysis(str(tmp_path / "ray" / name)).trials
        ids = [r.data.tags["ray.trial_id"] for r in children]
        wrong += len(set(ids) - {t.trial_id for t in saved})
        duplicated += len(ids) - len(set(ids))
        assert sorted(ids) == sorted(t.trial_id for t in saved)  # its runs are its trials
        study = optuna.load_study(
            study_name=name, storage=f"sqlite:///{tmp_path / 'ray' / name / 'optuna.db'}"
        )
        assert len(study.trials) == 2
    versions = client.search_model_versions("name = 'shapes32-vae-smoke'")
    assert sorted(v.tags["sweep_run_id"] for v in versions) == sorted(
        p.info.run_id for p in parents.values()
    )
    best = min(versions, key=lambda v: float(v.tags["val_bpd"]))  # chosen on validation
    champion_is_the_better = str(
        client.get_registered_model("shapes32-vae-smoke").aliases["champion"]
    ) == str(best.version)
    assert champion_is_the_better
    record(
        "two sweeps at once, one server and registered model",
        test="tests/test_tracking_server.py::test_two_sweeps_at_once_log_and_register_on_the_server_and_pull_fetches_over_http",
        trials=4,
        runs_in_the_wrong_sweep=wrong,
        duplicate_runs=duplicated,
        registered_versions=len(versions),
        champion_is_the_better=champion_is_the_better,
    )

    pulled = subprocess.run(  # the installed console script, as a user types it
        [
            shutil.which("vae-sweep"),
            "--tracking-uri",
            server,
            "pull",
            "shapes32-vae-smoke@champion",
        ]
        + ["--out", str(tmp_path / "model")],
        env=with_credentials(PASSWORD),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    assert (tmp_path / "model" / "checkpoint.safetensors").stat().st_size > 0

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    refused = in_process(
        cli.main,
        "--tracking-uri",
        server,
        "pull",
        "shapes32-vae-smoke",
        "--out",
        tmp_path / "nope",
    )
    assert refused.returncode == 2 and "refused" in refused.stderr
    assert "MLFLOW_TRACKING_PASSWORD" in refused.stderr
    assert not (tmp_path / "nope").exists()


# Settings the start script accepts; the tests below leave one out or spoil it.
GOOD_SETTINGS = {
    "MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow:db-pass@db:5432/mlflow",
    # A URL-encoded password (p@ss%word): configparser would choke on a bare %.
    "MLFLOW_AUTH_DATABASE_URI": "postgresql://mlflow:p%40ss%25word@db:5432/mlflow_auth",
    "MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket/artifacts",
    "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "0123456789abcdef",
}


def fake_python(folder: Path) -> Path:
    """A stand-in for the interpreter: writes to report.json the arguments the script passes
    and the auth config as mlflow's own reader sees it, instead of starting a server."""
    stub = folder / "python"
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, os, stat, sys\n"
        "from mlflow.server.auth.config import read_auth_config\n"
        "path = os.environ['MLFLOW_AUTH_CONFIG_PATH']\n"
        "config = read_auth_config()\n"
        "report = {'argv': sys.argv[1:], 'database_uri': config.database_uri,\n"
        "    'default_permission': config.default_permission,\n"
        "    'admin_username': config.admin_username,\n"
        "    'mode': stat.S_IMODE(os.stat(path).st_mode),\n"
        "    'backend': os.environ.get('MLFLOW_BACKEND_STORE_URI')}\n"
        f"open({str(folder / 'report.json')!r}, 'w').write(json.dumps(report))\n"
    )
    stub.chmod(0o755)
    return stub


def run_script(shell: str, folder: Path, settings: dict[str, str]):
    env = script_env(PYTHON=str(fake_python(folder)), TMPDIR=str(folder), **settings)
    return subprocess.run(
        [shell, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("shell", ["sh", "bash"])
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": None}, "MLFLOW_AUTH_ADMIN_PASSWORD is not set"),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": ""}, "MLFLOW_AUTH_ADMIN_PASSWORD is not set"),
        (
            {"MLFLOW_AUTH_ADMIN_PASSWORD": "eleven-char"},
            "MLFLOW_AUTH_ADMIN_PASSWORD has 11 characters; at least 12",
        ),
        ({"MLFLOW_FLASK_SERVER_SECRET_KEY": None}, "MLFLOW_FLASK_SERVER_SECRET_KEY is not set"),
        (
            {"MLFLOW_FLASK_SERVER_SECRET_KEY": "too-short"},
            "MLFLOW_FLASK_SERVER_SECRET_KEY has 9 characters",
        ),
        ({"MLFLOW_BACKEND_STORE_URI": None}, "MLFLOW_BACKEND_STORE_URI is not set"),
        ({"MLFLOW_AUTH_DATABASE_URI": None}, "MLFLOW_AUTH_DATABASE_URI is not set"),
        ({"PORT": "50o0"}, "PORT must be a whole number"),
    ],
)
def test_start_script_refuses_missing_or_weak_settings(tmp_path, shell, change, message):
    settings = {**GOOD_SETTINGS, **change}
    result = run_script(shell, tmp_path, {k: v for k, v in settings.items() if v is not None})
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert not (tmp_path / "report.json").exists()  # mlflow was never started


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_start_script_writes_the_auth_config_and_starts_basic_auth(tmp_path, shell):
    result = run_script(shell, tmp_path, GOOD_SETTINGS)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["database_uri"] == GOOD_SETTINGS["MLFLOW_AUTH_DATABASE_URI"]
    assert report["default_permission"] == "READ"
    assert report["admin_username"] == "admin"
    assert report["mode"] == 0o600  # it holds the database password
    argv = " ".join(report["argv"])
    assert argv.startswith("-m mlflow server --app-name basic-auth --serve-artifacts")
    assert "--artifacts-destination s3://bucket/artifacts" in argv
    assert "--host 0.0.0.0 --port 5000 --workers 2" in argv
    # The backend URI reaches mlflow through the environment, not the process list.
    assert report["backend"] == GOOD_SETTINGS["MLFLOW_BACKEND_STORE_URI"]
    assert "db-pass" not in argv
