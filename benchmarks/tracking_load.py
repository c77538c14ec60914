"""What load one team tracking server holds: `mlflow server` with basic-auth, started by
docker/tracking-server.sh on a PostgreSQL 15 this script starts, and N trial processes that
log at once the way our trials do.

    python benchmarks/tracking_load.py            # N = 4, 16, 64, 128; ~15 minutes on 2 cores
    python benchmarks/tracking_load.py --quick    # N = 2, 8, 3 epochs; 2 to 4 minutes
    python benchmarks/tracking_load.py --server plain    # the same without the auth app

The basic-auth server is docker/tracking-server.sh as shipped: each worker trusts a checked
password for MLFLOW_AUTH_CACHE_TTL_SECONDS. After the stages, N = --compare runs again with
the password checked at every request (the cache off) and without the auth app, for the ratio.

Each trial is a process of its own (forked, as a Ray worker is one) that opens its run with
sweeps.lifecycle.TrialRun under a parent opened with SweepRuns, then each epoch sleeps (its
training) and logs 10 metrics through the trial's real Outbox (one log_batch), its three image
grids every few epochs (the folders sweeps.trainable sends: PNG + webp), and saves the Outbox
into a checkpoint folder. At the end it ends its run, and what it still held is delivered
from that checkpoint as the driver does (sweeps.outbox.deliver). A stage gives its trials
--open-seconds to open their runs, stops their epochs after --stage-seconds and their delivery
after --drain-seconds, so a server that cannot keep up still gives a bounded run.

Measured: log calls per second, latencies, errors by kind (as the trial sees them, after
MLflow's one retry; and every status in the server's access log), CPU seconds of the server,
PostgreSQL and the trials, and from the store every (run, metric, step) logged against present:
lost = neither in the store nor still held in the trial's last checkpoint; duplicated = rows
beyond the first; runs duplicated or left RUNNING; image files stored.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import sqlalchemy as sa
from _load_servers import (
    PASSWORD,
    cpu_seconds,
    postgres,
    restarts,
    settle,
    statuses,
    tracking_server,
)
from _load_trial import GRIDS, METRICS, Plan, grid_pngs, trial
from _report import REPO, command, commit, machine, save_json, write_section

from sweeps import tracking
from sweeps.lifecycle import SweepRuns
from sweeps.outbox import FOLDER

SLOW_MS = 1000  # a log_batch p99 over this, or any error, is where the server is said to break

# One stage: N trials at once


def run_stage(url: str, plan: Plan, folder: Path) -> dict:
    """N trial processes under one new parent run, logging at once; each trial's record."""
    import multiprocessing

    folder.mkdir(parents=True)
    runs = SweepRuns(url, "vae-sweep/load", folder.name)
    runs.look_up(resume=False)
    parent = runs.open(asdict(plan), {"dataset": "shapes"}, {})
    stage = {"name": folder.name, "experiment_id": runs.experiment_id, "parent": parent,
             "pngs": str(grid_pngs(folder / "pngs"))}  # fmt: skip
    # fork: the imports are paid once; each child opens its own HTTP connections (MLflow
    # keys its session by pid).
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(plan.trials)
    procs = [
        context.Process(target=trial, args=(url, plan, stage, i, barrier, folder))
        for i in range(plan.trials)
    ]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + plan.open_s + plan.seconds + plan.drain_s + 180
    for proc in procs:
        proc.join(timeout=max(1.0, deadline - time.monotonic()))
        if proc.is_alive():  # stuck past every patience: its record is missing
            proc.kill()
            proc.join()
    runs.end("FINISHED")
    found = {int(p.stem.split("-")[1]): p for p in folder.glob("trial-*.json")}
    missing = {"calls": [], "epochs_logged": 0, "image_epochs": 0, "error": "killed, no record"}
    trials = [json.loads(found[i].read_text()) if i in found else {"index": i, **missing}
              for i in range(plan.trials)]  # fmt: skip
    return stage | {"trials": trials}


# What arrived


def logged_points(trials: list[dict]) -> set[tuple[str, str, int]]:
    """Every (run, metric, step) the trials handed to their Outbox."""
    return {
        (t["run_id"], key, step)
        for t in trials
        if "run_id" in t
        for key in METRICS
        for step in range(1, t["epochs_logged"] + 1)
    }


def kept_points(folder: Path, trials: list[dict]) -> set[tuple[str, str, int]]:
    """The metric points still waiting in the trials' last checkpoints (what the driver
    would deliver later): not in the store yet, and not lost."""
    kept = set()
    for t in trials:
        pending = folder / f"checkpoint-{t['index']}" / FOLDER / "pending.json"
        if "run_id" in t and pending.exists():
            for item in json.loads(pending.read_text())["pending"]:
                kept |= {(t["run_id"], key, step) for key, _, _, step in item.get("metrics", [])}
    return kept


def count_points(store_uri: str, logged: set, kept: set = frozenset()) -> dict[str, int]:
    """What MLflow's database (SQLAlchemy URI) holds of the `logged` (run, metric, step)
    points: present; lost (neither there nor `kept` for later delivery); duplicated (rows
    beyond the first of a point); unexpected (a point of these runs nobody logged)."""
    runs = sorted({run for run, _, _ in logged})
    query = sa.text(
        "SELECT run_uuid, key, step, COUNT(*) FROM metrics WHERE run_uuid IN :runs "
        "GROUP BY run_uuid, key, step"
    ).bindparams(sa.bindparam("runs", expanding=True, type_=sa.String))
    rows = select(store_uri, query, runs=runs)
    present = {(run, key, int(step)): n for run, key, step, n in rows}
    return {
        "logged": len(logged),
        "present": len(logged & present.keys()),
        "kept": len((logged - present.keys()) & kept),
        "lost": len(logged - present.keys() - kept),
        "duplicated": sum(n - 1 for n in present.values()),
        "unexpected": len(present.keys() - logged),
    }


def count_runs(store_uri: str, parent: str, trials: int) -> dict[str, int]:
    """The parent's child runs: how many runs beyond one a trial has, how many are RUNNING."""
    query = sa.text(
        "SELECT t.value, r.status FROM runs r JOIN tags p ON p.run_uuid = r.run_uuid "
        "JOIN tags t ON t.run_uuid = r.run_uuid WHERE p.key = 'mlflow.parentRunId' "
        "AND p.value = :parent AND t.key = 'ray.trial_id'"
    )
    rows = select(store_uri, query, parent=parent)
    per_trial = Counter(trial_id for trial_id, _ in rows)
    return {
        "runs": len(rows),
        "trials_without_run": trials - len(per_trial),
        "duplicated_runs": sum(n - 1 for n in per_trial.values()),
        "left_running": sum(status == "RUNNING" for _, status in rows),
    }


def select(store_uri: str, query, **params) -> list[tuple]:
    engine = sa.create_engine(store_uri)
    try:
        with engine.connect() as db:
            return [tuple(row) for row in db.execute(query, params)]
    finally:
        engine.dispose()


def count_files(artifacts: Path, stage: dict) -> dict[str, int]:
    """Image files the trials logged under images/ (a PNG and a webp per grid and epoch) and
    grids/ (the latest, at fixed names) against those in the server's artifact folder."""
    expected = present = 0
    for t in stage["trials"]:
        if not t.get("image_epochs"):
            continue
        for path, count in ((tracking.IMAGES, 2 * len(GRIDS) * t["image_epochs"]),
                            (tracking.LATEST_GRIDS, len(GRIDS))):  # fmt: skip
            folder = artifacts / stage["experiment_id"] / t["run_id"] / "artifacts" / path
            expected += count
            present += len(list(folder.glob("*"))) if folder.is_dir() else 0
    return {"expected": expected, "present": present}


# Figures


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None of nothing)."""
    if not values:
        return None
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, round(q / 100 * len(ranked)) - 1))]


def latency(calls: list[dict]) -> dict:
    ms = [1000 * c["s"] for c in calls]
    return {"calls": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "max_ms": max(ms, default=None)}  # fmt: skip


def summary(stage: dict) -> dict:
    """A stage's figures from its trials' records: log calls per second while the trials ran
    their epochs, latencies, errors, the share of the trials' time spent in log calls."""
    records = stage["trials"]
    calls = [c for t in records for c in t["calls"]]
    during = [c for c in calls if c["phase"] == "epochs"]
    logs = ("log_batch", "log_artifacts")
    started = min((t["started"] for t in records if "started" in t), default=0)
    wall = max((t["ended"] for t in records if "ended" in t), default=0) - started
    ok = sum(c["outcome"] == "ok" and c["call"] in logs for c in during)
    waiting = sum(c["s"] for c in during if c["call"] in logs)
    spent = sum(t["ended"] - t["started"] for t in records if "ended" in t)
    counters = Counter()
    for t in records:
        counters.update(t.get("counters", {}))
    return {
        "failed_trials": {
            t["index"]: t.get("error", "no record") for t in records if "counters" not in t
        },  # fmt: skip
        "epochs_logged": sum(t["epochs_logged"] for t in records),
        "wall_s": wall,
        "log_calls_per_s": ok / wall if wall > 0 else 0.0,
        "log_batch": latency([c for c in during if c["call"] == "log_batch"]),
        "artifacts": latency([c for c in during if c["call"] == "log_artifacts"]),
        "open_run_s": latency([{"s": t["open_s"]} for t in records if "open_s" in t]),
        "share_of_trial_time_logging": waiting / spent if spent else None,
        "errors": dict(Counter(c["outcome"] for c in calls if c["outcome"] != "ok")),
        "errors_by_phase": dict(Counter(c["phase"] for c in calls if c["outcome"] != "ok")),
        "errors_by_call": dict(Counter(c["call"] for c in calls if c["outcome"] != "ok")),
        "outbox": {
            "pending_at_trial_end": sum(t.get("pending_at_end", 0) for t in records),
            **counters,
        },  # fmt: skip
    }


def measure(url: str, store: str, folder: Path, pids: dict[str, int], plan: Plan) -> dict:
    """One stage against the server whose folder is `folder`, with what the server saw: the
    statuses in its access log, worker restarts, CPU seconds of the server, PostgreSQL and the
    trials, the load average; then what arrived, counted in the store."""
    log = folder / "server.log"
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    clients, offset = resource.getrusage(resource.RUSAGE_CHILDREN), log.stat().st_size
    load, started = [os.getloadavg()[0]], time.monotonic()
    stage = run_stage(url, plan, folder / f"{folder.name}-n{plan.trials}-s{plan.epoch_s:g}")
    load.append(os.getloadavg()[0])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    end = log.stat().st_size
    figures = asdict(plan) | summary(stage)
    figures["stage_s"] = time.monotonic() - started
    figures["cpu_s"] = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    figures["cpu_s"]["trials"] = sum(after[:2]) - sum(clients[:2])
    figures |= {"http_statuses": statuses(log, offset, end), "load_average": load}
    figures["worker_restarts"] = restarts(log, offset, end)
    logged = logged_points(stage["trials"])
    kept = kept_points(folder / stage["name"], stage["trials"])
    figures["points"] = count_points(f"{store}/mlflow", logged, kept)
    figures["runs"] = count_runs(f"{store}/mlflow", stage["parent"], plan.trials)
    figures["image_files"] = count_files(folder / "artifacts", stage)
    print(f"{folder.name} N={plan.trials}: {json.dumps(figures)[:1500]}", flush=True)
    return figures


def serve(folder: Path, store: str, pg_pid: int, kind: str, workers: int, plans) -> list[dict]:
    """Start the server of `kind` on the store and run the stages against it, in turn."""
    (folder / kind).mkdir()
    server_kind, settings = SERVERS[kind]
    with tracking_server(folder / kind, store, workers, server_kind, **settings) as (url, server):
        settle(server.pid)
        pids = {"server": server.pid, "postgres": pg_pid}
        return [measure(url, store, folder / kind, pids, plan) for plan in plans]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="4,16,64,128", help="N trials at once, per stage")
    parser.add_argument("--epoch-seconds", type=float, default=5.0, help="a trial's epoch")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-every", type=int, default=5, help="grids every this many epochs")
    parser.add_argument("--open-seconds", type=float, default=90.0,
                        help="a trial that has not opened its run by then gives up")  # fmt: skip
    parser.add_argument("--stage-seconds", type=float, default=60.0,
                        help="no epoch starts later than this into a stage")  # fmt: skip
    parser.add_argument("--drain-seconds", type=float, default=60.0,
                        help="how long a trial's delivery at its end may wait")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="the server's (script default)")
    parser.add_argument("--server", default="basic-auth", choices=list(KINDS))
    parser.add_argument("--compare", type=int, default=16,
                        help="then N trials with the password cache off and without the auth "
                        "app (0: none)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="N = 2, 8; 3 epochs")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.image_every, args.compare = "2,8", 3, 2, 8
        args.open_seconds, args.stage_seconds, args.drain_seconds = 60.0, 20.0, 30.0
    plans = [
        Plan(int(n), args.epoch_seconds, args.epochs, args.image_every, args.stage_seconds,
             args.drain_seconds, args.open_seconds)
        for n in args.trials.split(",")
    ]  # fmt: skip
    compare = args.compare and args.server == "basic-auth"
    compare = [replace(plans[0], trials=args.compare)] if compare else []
    if args.server.startswith("basic-auth"):
        os.environ |= {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    # Stopped (`timeout`, kill): stop PostgreSQL and the server on the way out, too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("tracking_load: stopped by SIGTERM"))
    tracking.quiet_downloads()
    figures = {"command": command()}
    with tempfile.TemporaryDirectory(prefix="tracking-load-") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o755)  # PostgreSQL, running as postgres, lives below
        with postgres(folder / "pg") as (store, pg_pid):
            stages = serve(folder, store, pg_pid, args.server, args.workers, plans)
            uncached, plain = (
                serve(folder, store, pg_pid, kind, args.workers, compare) if compare else []
                for kind in ("basic-auth-uncached", "plain")
            )
    # After the trials: machine() imports torch, which the forked trials need not carry.
    figures |= {"commit": commit(), "machine": machine(), "server": args.server}
    figures |= {"workers": args.workers, "stages": stages}
    figures["without_auth"], figures["uncached_auth"] = plain, uncached
    name = "tracking_load" + ("" if args.server == "basic-auth" else f"_{args.server}")
    save_json(name, figures)
    write_section(name, report(figures), doc=REPO / "docs" / "RELIABILITY.md")


# The section of docs/RELIABILITY.md

SERVERS = {  # what each kind of stage runs: _load_servers.tracking_server's kind, settings
    "basic-auth": ("basic-auth", {}),
    "basic-auth-uncached": ("basic-auth", {"MLFLOW_AUTH_CACHE_TTL_SECONDS": "0"}),
    "plain": ("plain", {}),
}
KINDS = {
    "basic-auth": "`mlflow server` with basic-auth, started by docker/tracking-server.sh",
    "basic-auth-uncached": "`mlflow server` with basic-auth checking the password at every "
    "request, started by docker/tracking-server.sh with MLFLOW_AUTH_CACHE_TTL_SECONDS=0",
    "plain": "`mlflow server` without the auth app",
}


def broke(stage: dict) -> bool:
    """Where the server is said to break: slow log calls, errors, or anything not delivered."""
    points = stage["points"]
    slow = (stage["log_batch"]["p99_ms"] or 0) > SLOW_MS
    failed = stage["failed_trials"] or stage["runs"]["duplicated_runs"]
    return slow or bool(stage["errors"] or failed) or points["lost"] + points["kept"] > 0


def ms(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value / scale:,.0f}"


def cpu_per_request(s: dict) -> float:
    """Milliseconds of CPU the server and PostgreSQL spent per request the server answered."""
    cpu = s["cpu_s"]["server"] + s["cpu_s"]["postgres"]
    return 1000 * cpu / max(1, sum(s["http_statuses"].values()))


def row(s: dict, label: str = "") -> str:
    errors = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())) or "0"
    if s["failed_trials"]:
        errors += f"; {len(s['failed_trials'])} trials failed"
    points, runs, files = s["points"], s["runs"], s["image_files"]
    cells = [
        f"{s['trials']}{label}",
        f"{s['epochs_logged']} of {s['trials'] * s['epochs']}",
        f"{s['log_calls_per_s']:.1f}",
        f"{ms(s['log_batch']['p50_ms'])} / {ms(s['log_batch']['p99_ms'])}",
        f"{ms(s['artifacts']['p50_ms'])} / {ms(s['artifacts']['p99_ms'])}",
        f"{ms(s['open_run_s']['p50_ms'], 1000)} / {ms(s['open_run_s']['max_ms'], 1000)}",
        errors,
        f"{points['lost']} of {points['logged']} ({points['kept']} kept)",
        f"{points['duplicated']} / {runs['duplicated_runs']} / {runs['left_running']}",
        f"{files['present']} of {files['expected']}",
        f"{100 * (s['share_of_trial_time_logging'] or 0):.0f}%",
        f"{cpu_per_request(s):.0f}",
        f"{s['load_average'][0]:.1f} to {s['load_average'][1]:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| N | epochs logged | log calls/s | log_batch p50 / p99 ms | artifacts p50 / p99 ms "
    "| opening a run p50 / max s | errors (as the trials saw them) | points lost "
    "| duplicated points / runs / runs left RUNNING | image files stored "
    "| trials' time in log calls | CPU ms a request (server + PostgreSQL) | load average |"
)


def report(f: dict) -> str:
    stages, first = f["stages"], f["stages"][0]
    server = KINDS[f["server"]]
    title = "Load on the team tracking server" + (
        "" if f["server"] == "basic-auth" else f" ({f['server']})"
    )
    return "\n".join([
        f"## {title}",
        "",
        f"Measured by `{f['command']}` at commit {f['commit']} on {f['machine']}: {server} "
        f"({f['workers']} workers) on PostgreSQL 15, the trial processes on the same cores. "
        f"N trials start together; each opens its run under a parent (sweeps.lifecycle), then "
        f"every {first['epoch_s']:g} s (its epoch) logs 10 metrics in one log_batch through its "
        f"Outbox and, every {first['image_every']} epochs, three image grids (a PNG of ~40 KB "
        f"and a webp each, plus the latest PNGs: 9 files, 2 log_artifacts calls), up to "
        f"{first['epochs']} epochs or {first['seconds']:g} s; what it could not send is "
        "delivered from its last checkpoint at the end, as the driver does. Latencies are of "
        "the calls as the Outbox makes them (MLflow retries each once first); lost = logged "
        "but neither in the store nor still held in the trial's last checkpoint.",
        "",
        HEADER,
        "|---" * 13 + "|",
        *(row(s) for s in stages),
        *(row(s, ", password checked at every request") for s in f.get("uncached_auth", [])),
        *(row(s, ", no auth app") for s in f.get("without_auth", [])),
        "",
        meaning(stages, f.get("uncached_auth", []), f.get("without_auth", [])),
    ])  # fmt: skip


def meaning(stages: list[dict], uncached: list[dict], plain: list[dict]) -> str:
    """The paragraph under the table: where it broke, what a request costs, what happened
    past the break, what the Outbox did."""
    first = next((s for s in stages if broke(s)), None)
    where = (
        f"No stage broke (log_batch p99 under {SLOW_MS} ms, no error, everything delivered)."
        if first is None
        else f"It held at N = {stages[0]['trials']} and broke at N = {first['trials']} "
        f"(log_batch p99 {ms(first['log_batch']['p99_ms'])} ms)."
        if first is not stages[0]
        else f"It broke at the first stage, N = {first['trials']}."
    )
    text = [where]
    text.append(
        f"At N = {stages[0]['trials']} the server spent {cpu_per_request(stages[0]):.0f} ms of "
        "CPU (its own and PostgreSQL's) per request it answered"
    )
    if plain and uncached:
        n = plain[0]["trials"]
        same = next((s for s in stages if s["trials"] == n), stages[0])
        cached, checked = cpu_per_request(same), cpu_per_request(uncached[0])
        text[-1] += (
            f". At N = {n}: {cached:.0f} ms as shipped, {checked:.0f} ms with the password "
            f"checked at every request ({checked / cached:.1f}x), {cpu_per_request(plain[0]):.0f}"
            " ms without the auth app. MLflow's basic-auth checks a password's hash (PBKDF2, "
            "slow by design) at every request unless `auth_cache_ttl_seconds` is set; "
            "docker/tracking-server.sh sets it from MLFLOW_AUTH_CACHE_TTL_SECONDS"
        )
    text[-1] += "."
    for s in (s for s in stages if s["failed_trials"]):
        answered, runs = sum(s["http_statuses"].values()), s["runs"]
        text.append(
            f"At N = {s['trials']}, {len(s['failed_trials'])} trials could not open their run "
            f"within {s['open_s']:g} s: the server spent {s['cpu_s']['server']:.0f} CPU seconds "
            f"and answered {answered} requests, while the trials' requests timed out (10 s, "
            "retried once by MLflow) and were sent again"
            + (
                f"; create requests that ran on after their trial had timed out made "
                f"{runs['duplicated_runs']} runs twice and left {runs['left_running']} RUNNING"
                if runs["duplicated_runs"] or runs["left_running"]
                else ""
            )
            + "."
        )
    late = sum(s["outbox"].get("mlflow_late", 0) for s in stages)
    pending = sum(s["outbox"]["pending_at_trial_end"] for s in stages)
    dropped = sum(s["outbox"].get("mlflow_dropped", 0) for s in stages)
    lost = sum(s["points"]["lost"] for s in stages)
    kinds, statuses_seen = Counter(), Counter()
    for s in stages:
        kinds.update(s["errors"])
        statuses_seen.update(s["http_statuses"])
    fives = sum(n for status, n in statuses_seen.items() if status.startswith("5"))
    text.append(
        f"Errors the trials met: {dict(kinds) or 'none'}; the server's log holds "
        f"{statuses_seen.get('429', 0)} 429 (`mlflow server` never sends one; a proxy in front "
        f"of it would) and {fives} 5xx. The Outbox treats timeouts, 5xx and "
        f"429 alike: it kept {late} failed log calls and sent them before the trial's next "
        "one (it does not sleep itself; MLflow's single retry backs off first), "
        f"{pending} still waited when their trial ended and were delivered from its "
        f"checkpoint, {dropped} were dropped (4xx); {lost} metric points were lost."
    )
    return " ".join(text)


if __name__ == "__main__":
    main()
