"""The team set-up, for real on one machine: PostgreSQL started by the test, `mlflow server`
on it with basic-auth and proxied artifacts, a sweep that logs and registers there with
credentials from the environment, and `vae-sweep pull` over HTTP. Wrong passwords are refused.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO
from mlflow.tracking import MlflowClient

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "team-tracking-pass"  # the server refuses admin passwords under 12 characters


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(*args):
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *map(str, args)],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def postgres():
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0:
        pytest.skip(f"needs PostgreSQL 15 in {PG_BIN} and root (to run it as postgres)")
    folder = Path(tempfile.mkdtemp(prefix="vae-sweep-pg-"))  # not under pytest's 0700 tmp
    shutil.chown(folder, "postgres")
    port = free_port()
    as_postgres(PG_BIN / "initdb", "-D", folder / "data", "-A", "trust", "-U", "postgres")
    as_postgres(
        PG_BIN / "pg_ctl",
        "-D",
        folder / "data",
        "-l",
        folder / "log",
        "-w",
        "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
        "start",
    )
    for db in ("mlflow", "mlflow_auth"):
        as_postgres(PG_BIN / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", db)
    yield f"postgresql://postgres@127.0.0.1:{port}"
    as_postgres(PG_BIN / "pg_ctl", "-D", folder / "data", "-m", "fast", "stop")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    (folder / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {postgres}/mlflow_auth\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-secret",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--app-name",
            "basic-auth",
            "--backend-store-uri",
            f"{postgres}/mlflow",
            "--serve-artifacts",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=open(folder / "server.log", "w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            if proc.poll() is not None:
                raise AssertionError((folder / "server.log").read_text()[-3000:]) from None
            time.sleep(0.5)
    else:
        raise AssertionError(
            "mlflow server did not come up: " + (folder / "server.log").read_text()[-3000:]
        )
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def with_credentials(password):
    return {
        **os.environ,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": password,
    }


def test_sweep_logs_and_registers_on_the_server_and_pull_fetches_over_http(server, tmp_path):
    shutil.copy(REPO / "sweeps" / "shapes.py", tmp_path / "shapes.py")
    result = subprocess.run(
        [
            sys.executable,
            "shapes.py",
            "--smoke-test",
            "--tracking-uri",
            server,
            "--storage-path",
            str(tmp_path / "ray"),
        ],
        cwd=tmp_path,
        env=with_credentials(PASSWORD),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered   shapes-vae version 1 as @champion" in result.stdout

    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=PASSWORD)
    try:
        client = MlflowClient(server)
        experiment = client.get_experiment_by_name("vae-sweep/shapes")
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
        assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key)

    cli = shutil.which("vae-sweep")
    pulled = subprocess.run(
        [
            cli,
            "--tracking-uri",
            server,
            "pull",
            "shapes-vae@champion",
            "--out",
            str(tmp_path / "model"),
        ],
        env=with_credentials(PASSWORD),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    assert (tmp_path / "model" / "checkpoint.safetensors").stat().st_size > 0

    refused = subprocess.run(
        [
            cli,
            "--tracking-uri",
            server,
            "pull",
            "shapes-vae@champion",
            "--out",
            str(tmp_path / "nope"),
        ],
        env=with_credentials("not-the-password"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and "refused" in refused.stderr
    assert "MLFLOW_TRACKING_PASSWORD" in refused.stderr
    assert not (tmp_path / "nope").exists()
