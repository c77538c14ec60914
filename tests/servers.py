"""Real servers for tests: a free loopback port, `mlflow server` on an SQLite store, a
throw-away PostgreSQL with the team's tracking server on it (started by
docker/tracking-server.sh, basic-auth), and a guard for tests that own every Ray process of the
machine."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _load_servers import (  # noqa: E402  (as the benchmarks start them)
    PG_BIN,
    free_port,  # noqa: F401  (the tests' too)
    postgres,
    tracking_server,
)

ADMIN_PASSWORD = "team-tracking-pass"  # the server refuses admin passwords under 12 characters
SERVER_SCRIPT = REPO / "docker" / "tracking-server.sh"  # the tracking-server image's entrypoint


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on an SQLite store in `folder` (migrated, unless one is there), artifacts
    proxied; up when it answers."""
    from conftest import migrated_store

    if not (folder / "mlflow.db").exists():
        migrated_store(folder / "mlflow.db")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--workers", "1"]
        + ["--serve-artifacts", "--artifacts-destination", str(folder / "artifacts")],
        stdout=open(folder / "server.log", "a"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            assert server.poll() is None, (folder / "server.log").read_text()[-3000:]
            time.sleep(0.3)
    raise AssertionError("mlflow server did not come up")


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=60)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL 15 on a loopback port with the databases `mlflow` and
    `mlflow_auth` (benchmarks/_load_servers.postgres, which the benchmarks start too); yields
    its URI without a database. Skips without the binaries or root (the server runs as the
    postgres user)."""
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0:
        pytest.skip(f"needs PostgreSQL 15 in {PG_BIN} and root (to run it as postgres)")
    home = Path(tempfile.mkdtemp(prefix="vae-sweep-pg-"))  # not under pytest's 0700 tmp:
    os.chmod(home, 0o755)  # the postgres user lives below
    try:
        with postgres(home / "pg") as (uri, _):
            yield uri
    finally:
        shutil.rmtree(home, ignore_errors=True)


def script_env(**settings: str) -> dict[str, str]:
    """This environment without MLflow settings, plus what tracking-server.sh reads; `mlflow` is
    this interpreter's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "PYTHON": sys.executable, **settings}


@contextlib.contextmanager
def team_server(postgres: str, folder: Path, **settings: str) -> Iterator[str]:
    """The team's tracking server as the image runs it: docker/tracking-server.sh through its
    #!/bin/sh line (benchmarks/_load_servers.tracking_server, which the benchmarks start too),
    on `postgres`, admin password ADMIN_PASSWORD, artifacts in `folder`, and the script's
    other `settings`. Yields its URL once /health answers."""
    with tracking_server(folder, postgres, password=ADMIN_PASSWORD, **settings) as (url, _):
        yield url


RAY_CLI = Path(sys.executable).with_name("ray")  # this environment's `ray` command


def ray_processes() -> list[str]:
    """This machine's Ray processes (GCS, raylets, workers, the monitor): 'pid command'."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        if any(b"site-packages/ray/" in word for word in words):
            command = b" ".join(words)[:120].decode(errors="replace")
            found.append(f"{cmdline.parent.name} {command}")
    return found


@contextlib.contextmanager
def whole_machine_ray():
    """For tests that run `ray stop` (the autoscaler harness, `ray up`/`ray down`), which ends
    every Ray process of the user on the machine: they start with none running (this test
    process's own Ray is shut down) and leave none behind."""
    import ray

    ray.shutdown()
    deadline = time.monotonic() + 30
    while (running := ray_processes()) and time.monotonic() < deadline:
        time.sleep(0.5)  # the previous test's Ray still winding down
    assert not running, "another Ray runs here; `ray stop` would end it:\n" + "\n".join(running)
    try:
        yield
    finally:
        subprocess.run([RAY_CLI, "stop", "--force"], capture_output=True, check=False)
        deadline = time.monotonic() + 30
        while (left := ray_processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
    assert not left, "Ray processes left behind:\n" + "\n".join(left)
