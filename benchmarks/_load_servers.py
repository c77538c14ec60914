"""The servers benchmarks/tracking_load.py puts under load, started and stopped by it: a
throw-away PostgreSQL 15 and the team's `mlflow server` on it, and what can be read from the
outside of them (CPU seconds, the statuses in the access log)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from _report import REPO

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SCRIPT = REPO / "docker" / "tracking-server.sh"
PASSWORD = "load-benchmark-pass"  # the admin's: basic-auth refuses passwords under 12 chars


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(*args) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], check=True,
                   capture_output=True, timeout=120)  # fmt: skip


@contextmanager
def postgres(folder: Path):
    """A throw-away PostgreSQL 15 on a free loopback port with the databases the server uses
    (`mlflow`, `mlflow_auth`); its URI and the postmaster's pid. PostgreSQL refuses to run as
    root, so it runs as `postgres` (as tests/test_tracking_server.py runs it)."""
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0:
        raise SystemExit(f"needs PostgreSQL 15 in {PG_BIN} and root (to run it as postgres)")
    folder.mkdir()
    shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    as_postgres(PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    (folder / "options").write_text(options)  # for restart_postgres
    as_postgres(PG_BIN / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-o", options, "start")
    try:
        for db in ("mlflow", "mlflow_auth"):
            as_postgres(PG_BIN / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", db)
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield f"postgresql://postgres@127.0.0.1:{port}", pid
    finally:
        as_postgres(PG_BIN / "pg_ctl", "-D", data, "-m", "fast", "stop")


def restart_postgres(folder: Path, down: float) -> None:
    """Stop the PostgreSQL of `folder` (postgres()'s) at once, keep it down `down` seconds,
    start it again on the same port: what a database host's reboot does to its clients."""
    data = folder / "data"
    as_postgres(PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "stop")
    time.sleep(down)
    options = (folder / "options").read_text()
    as_postgres(PG_BIN / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-o", options, "start")


@contextmanager
def tracking_server(
    folder: Path,
    store: str,
    workers: int = 2,
    kind: str = "basic-auth",
    password: str = PASSWORD,
    **settings: str,
):
    """The team's server on `store`/mlflow with artifacts proxied to folder/artifacts: for
    `basic-auth`, docker/tracking-server.sh as the image runs it (users in `store`/mlflow_auth,
    the admin's `password`, the script's other `settings`); for `plain`, the same `mlflow
    server` without the auth app. Yields its URL and Popen once /health answers; its uvicorn
    access log, a line a request, goes to folder/server.log. The tests' team server too."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    if kind == "basic-auth":
        env |= {
            "PYTHON": sys.executable, "MLFLOW_BACKEND_STORE_URI": f"{store}/mlflow",
            "MLFLOW_AUTH_DATABASE_URI": f"{store}/mlflow_auth",
            "MLFLOW_ARTIFACTS_DESTINATION": str(folder / "artifacts"),
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "benchmark-only-key-0123",
            "HOST": "127.0.0.1", "PORT": str(port), "WORKERS": str(workers), "TMPDIR": str(folder),
            **settings,
        }  # fmt: skip
        args = [str(SCRIPT)]
    elif kind == "plain":
        args = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"{store}/mlflow",
                "--serve-artifacts", "--artifacts-destination", str(folder / "artifacts"),
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]  # fmt: skip
    else:
        raise ValueError(f"--server {kind!r}: expected basic-auth or plain")
    log = folder / "server.log"
    # A session of its own: the uvicorn workers and MLflow's job consumers end with it.
    proc = subprocess.Popen(args, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, proc, log)
        yield url, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return
        except OSError:
            if proc.poll() is not None:
                message = f"the tracking server exited:\n{log.read_text()[-3000:]}"
                raise SystemExit(message) from None
            time.sleep(0.5)
    raise SystemExit(f"the tracking server did not answer in {timeout:.0f} s; see {log}")


def cpu_seconds(root: int) -> float:
    """CPU seconds of process `root` and every descendant now alive, with the children they
    have reaped (so a PostgreSQL backend that ended still counts, in its postmaster)."""
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(stat.parent.name)] = (int(fields[1]), sum(map(int, fields[11:15])))
    tree = {root}
    for _ in range(8):  # a few generations: script -> mlflow -> uvicorn -> workers
        tree |= {pid for pid, (ppid, _) in stats.items() if ppid in tree}
    return sum(stats[pid][1] for pid in tree if pid in stats) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, timeout: float = 90) -> None:
    """Wait until the server has finished starting: its workers and MLflow's job consumers
    import for a while after /health answers, which is no request's cost."""
    deadline, last = time.monotonic() + timeout, cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(3)
        now = cpu_seconds(pid)
        if now - last < 0.3:  # a tenth of a core: idle
            return
        last = now


def statuses(log: Path, start: int, end: int) -> dict[str, int]:
    """HTTP statuses of the requests the access log recorded between two byte offsets."""
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    return dict(sorted(Counter(re.findall(r'HTTP/[\d.]+" (\d{3})', text)).items()))


def restarts(log: Path, start: int, end: int) -> int:
    """Server worker processes uvicorn found dead (or unresponsive) and replaced."""
    with open(log, "rb") as f:
        f.seek(start)
        return f.read(end - start).decode(errors="replace").count("died")
