"""Real servers for tests: a free loopback port, `mlflow server` on an SQLite store, and a
guard for tests that own every Ray process of the machine."""

import contextlib
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
