"""Real servers for tests: a free loopback port, and `mlflow server` on an SQLite store."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
