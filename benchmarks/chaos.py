"""Chaos: one sweep on a loopback multi-node Ray (a head without CPUs, two one-CPU worker
nodes), logging to a real `mlflow server` on PostgreSQL, while faults land at random times
drawn from a seed: a trial's worker SIGKILLed, a worker node removed and a new one added, the
tracking server stopped and started again, the driver SIGKILLed and the sweep resumed with
--resume. Afterwards everything is counted from the stores, none of it typed in: every epoch a
trial trained is logged exactly once, no run is left RUNNING, Tune, Optuna and MLflow agree on
every trial's outcome, the sweep registered one model version, and the champion is the trial
best on validation.

    python benchmarks/chaos.py                         # 50 faults; docs/RELIABILITY.md
    python benchmarks/chaos.py --faults 8 --trials 8   # a short look

Writes benchmarks/results/chaos.json and the "Chaos" section of docs/RELIABILITY.md.
tests/test_chaos.py runs a small one in the suite. Ray's own `ray.init()` joins any Ray
running on the machine: run this alone.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from _load_servers import free_port, postgres, wait_until_up
from _report import REPO, command, commit, machine, save_json, write_section
from mlflow.tracking import MlflowClient
from ray import tune
from ray.cluster_utils import Cluster

RELIABILITY = REPO / "docs" / "RELIABILITY.md"
NAME = "chaos"
REGISTERED = "shapes-vae-smoke"  # the sweep's registered model: 64 px shapes, --smoke-test
KINDS = ("trial worker killed", "worker node replaced", "server restarted", "driver killed")

# The quick start's space at 64 px, as tests/test_sweep_faults.py runs it: epochs slow enough
# (a few seconds on one core) that faults land while trials train.
SCRIPT = """
from sweeps.engine import main
from sweeps.shapes import BASE_CONFIG, SEARCH_SPACE

if __name__ == "__main__":
    main(SEARCH_SPACE, {**BASE_CONFIG, "image_size": 64})
"""


class TrackingServer:
    """`mlflow server` on `backend`, artifacts proxied from `folder`, always on one port so
    that the trials find it again after a restart."""

    def __init__(self, backend: str, folder: Path) -> None:
        self.backend, self.folder, self.port = backend, folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
            + ["--port", str(self.port), "--backend-store-uri", self.backend, "--workers", "2"]
            + ["--serve-artifacts", "--artifacts-destination", str(self.folder / "artifacts")],
            stdout=open(self.folder / "server.log", "a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its uvicorn workers stop with it
        )
        wait_until_up(self.url, self.process, self.folder / "server.log")

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
            self.process = None


def trial_workers(cluster: Cluster) -> list[int]:
    """Pids of the processes running a trial on `cluster`'s nodes: Ray names them
    ray::ImplicitFunc, and their parent is one of the cluster's raylets (other Ray clusters
    may run on the machine)."""
    raylets = {
        info.process.pid
        for node in cluster.list_all_nodes()
        for info in node.all_processes.get("raylet", [])
    }
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit():
                continue
            if not (proc / "cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):
                continue
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:  # ended meanwhile
            continue
        if parent in raylets:
            pids.append(int(proc.name))
    return pids


@dataclass
class Harness:
    """The sweep's driver, the cluster and the server, and the faults dealt to them."""

    folder: Path
    cluster: Cluster
    server: TrackingServer
    flags: list[str]
    rng: random.Random
    driver: subprocess.Popen | None = None
    faults: list[dict] = field(default_factory=list)
    deck: list[str] = field(default_factory=list)  # the kinds still to deal this round
    drivers: int = 0
    started: float = 0.0

    def start_driver(self, resume: bool = False) -> None:
        self.drivers += 1
        # a resumed sweep keeps its flags; --smoke-test and the GPUs are said again
        again = ["--resume", "--smoke-test", "--gpus-per-trial", "0"]
        flags = [*again, "--name", NAME] if resume else [*self.flags, "--name", NAME]
        self.driver = subprocess.Popen(
            [sys.executable, str(self.folder / "shapes.py"), *flags]
            + ["--tracking-uri", self.server.url, "--storage-path", str(self.folder / "ray")],
            cwd=self.folder,
            env={**os.environ, "RAY_ADDRESS": self.cluster.address},
            stdout=open(self.folder / f"driver{self.drivers}.out", "w"),
            stderr=open(self.folder / f"driver{self.drivers}.err", "w"),
        )

    def inject(self, kind: str) -> dict:
        """One fault of `kind`; returns what was done."""
        at = time.time()
        if kind == "trial worker killed":
            pid = self.rng.choice(trial_workers(self.cluster))
            os.kill(pid, signal.SIGKILL)
            what = f"pid {pid}"
        elif kind == "worker node replaced":
            node = self.rng.choice(sorted(self.cluster.worker_nodes, key=lambda n: n.node_id))
            self.cluster.remove_node(node, allow_graceful=False)
            self.cluster.add_node(num_cpus=1)
            what = f"node {node.node_id[:8]} removed, another added"
        elif kind == "server restarted":
            self.server.stop()
            down = self.rng.uniform(2, 10)
            time.sleep(down)
            self.server.start()
            what = f"down {down:.1f} s"
        else:  # driver killed
            self.driver.send_signal(signal.SIGKILL)
            self.driver.wait()
            time.sleep(self.rng.uniform(0, 3))
            self.start_driver(resume=True)
            what = f"driver {self.drivers - 1} killed, driver {self.drivers} resumes"
        return {"kind": kind, "at": round(at - self.started, 1), "what": what}

    def run(self, faults: int, gap: tuple[float, float], timeout: float) -> int:
        """Start the sweep and deal `faults` faults while a trial trains, `gap` seconds apart
        (uniform), every kind once per round; then let it finish. Returns the last driver's
        exit code."""
        self.started = time.time()
        self.start_driver()
        deadline = time.monotonic() + timeout
        while len(self.faults) < faults and time.monotonic() < deadline:
            time.sleep(self.rng.uniform(*gap))
            if self.driver.poll() is not None:
                break  # the sweep ended before every fault was dealt
            if not trial_workers(self.cluster):
                continue  # faults on an idle sweep test nothing
            if not self.deck:
                self.deck = self.rng.sample(KINDS, len(KINDS))
            kind = self.deck.pop()
            try:
                self.faults.append(self.inject(kind))
            except (IndexError, ProcessLookupError):  # the trial ended meanwhile
                self.deck.append(kind)
                continue
            print(f"fault {len(self.faults)}: {self.faults[-1]}", flush=True)
        try:
            return self.driver.wait(timeout=max(60.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.driver.kill()
            return -9


def audit(folder: Path, uri: str, max_epochs: int) -> dict:
    """What the stores hold after the sweep, counted: Tune's experiment state, the Optuna
    study and the MLflow runs and registry."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("vae-sweep/shapes")
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    (parent,) = [r for r in runs if r.data.tags.get("vae_sweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("vae_sweep.role") == "trial"]
    by_trial = Counter(r.data.tags["ray.trial_id"] for r in children)
    study = optuna.load_study(
        study_name=NAME, storage=f"sqlite:///{folder / 'ray' / NAME / 'optuna.db'}"
    )
    trials = tune.ExperimentAnalysis(str(folder / "ray" / NAME)).trials
    counted = ("trials without a run", "epochs trained", "epochs lost", "epochs logged twice")
    counts = Counter(dict.fromkeys((*counted, "epochs logged but not trained"), 0))
    disagreements = []
    for trial in trials:
        matching = [r for r in children if r.data.tags["ray.trial_id"] == trial.trial_id]
        if not matching:
            counts["trials without a run"] += 1
            continue
        run = matching[0]
        trained = int((trial.last_result or {}).get("epoch", 0))
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_bpd")]
        epochs = set(range(1, trained + 1))
        counts["epochs trained"] += trained
        counts["epochs lost"] += len(epochs - set(steps))
        counts["epochs logged twice"] += len(steps) - len(set(steps))
        counts["epochs logged but not trained"] += len(set(steps) - epochs)
        optuna_state = study.trials[trial.config["trial_index"]].state.name
        outcome = run.data.tags.get("vae_sweep.outcome")
        if (outcome, optuna_state) not in _agreeing(trial.status, trained, max_epochs):
            disagreements.append(
                f"{run.info.run_name}: Tune {trial.status} after {trained} epochs, MLflow "
                f"{outcome}, Optuna {optuna_state}"
            )
    versions = client.search_model_versions(f"name = '{REGISTERED}'")
    mine = [v for v in versions if v.tags.get("sweep_run_id") == parent.info.run_id]
    lowest = {
        r.info.run_id: min(
            (m.value for m in client.get_metric_history(r.info.run_id, "val_bpd")),
            default=float("inf"),
        )
        for r in children
    }
    best = parent.data.tags.get("best_trial_run_id")
    return {
        "trials": len(trials),
        "runs": len(children),
        "runs per trial above one": sum(n - 1 for n in by_trial.values()),
        "runs left RUNNING": sum(r.info.status == "RUNNING" for r in runs),
        "outcome disagreements": len(disagreements),
        "disagreements": disagreements,
        "registered versions": len(mine),
        "champion is the best on validation": best is not None
        and lowest.get(best) == min(lowest.values()),
        "parent status": parent.info.status,
        **counts,
    }


def _agreeing(status: str, trained: int, max_epochs: int) -> set[tuple[str, str]]:
    """The (MLflow outcome, Optuna state) pairs that agree with how a Tune trial ended."""
    if status == "ERROR":
        return {("failed", "FAIL")}
    if status == "TERMINATED" and trained >= max_epochs:
        return {("completed", "COMPLETE")}
    if status == "TERMINATED":
        return {("pruned", "PRUNED"), ("stopped", "PRUNED")}
    return set()  # PENDING or RUNNING after the sweep: nothing agrees


def chaos(
    folder: Path, faults: int, seed: int, trials: int, epochs: int, gap: tuple[float, float]
) -> dict:
    """The whole run in `folder`: PostgreSQL, the server, the cluster, the sweep, the faults;
    then the audit. Everything started here is stopped here."""
    (folder / "shapes.py").write_text(SCRIPT)
    home = Path(tempfile.mkdtemp(prefix="vae-sweep-chaos-"))  # not below a 0700 folder:
    os.chmod(home, 0o755)  # PostgreSQL runs as the postgres user
    try:
        with postgres(home / "pg") as (store, _):
            server = TrackingServer(f"{store}/mlflow", folder)
            return _chaos(folder, server, faults, seed, trials, epochs, gap)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _chaos(folder, server, faults, seed, trials, epochs, gap) -> dict:
    cluster = harness = None
    try:
        server.start()
        cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0})
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        flags = ["--smoke-test", "--search", "tpe"]  # 256 images: seconds an epoch; a study
        flags += ["--num-samples", str(trials), "--max-epochs", str(epochs)]
        flags += ["--grace-period", "2", "--seed", str(seed), "--gpus-per-trial", "0"]
        harness = Harness(folder, cluster, server, flags, random.Random(seed))
        started = time.monotonic()
        code = harness.run(faults, gap, timeout=3600)
        while code != 0 and harness.drivers < 20:  # a driver that died of a fault: resume
            harness.start_driver(resume=True)
            code = harness.driver.wait(timeout=3600)
        return {
            "seed": seed,
            "exit": code,
            "drivers": harness.drivers,
            "minutes": round((time.monotonic() - started) / 60, 1),
            "faults": harness.faults,
            "audit": audit(folder, server.url, epochs),
        }
    finally:
        if harness is not None and harness.driver is not None and harness.driver.poll() is None:
            harness.driver.kill()
            harness.driver.wait()
        if cluster is not None:
            cluster.shutdown()
        server.stop()


FIGURES = (
    "trials",
    "runs",
    "runs per trial above one",
    "runs left RUNNING",
    "epochs trained",
    "epochs lost",
    "epochs logged twice",
    "epochs logged but not trained",
    "outcome disagreements",
    "registered versions",
    "champion is the best on validation",
)


def held(result: dict) -> bool:
    """Whether the sweep came through: nothing lost, duplicated or left running, the stores
    agree, one registration, the right champion."""
    a = result["audit"]
    return (
        result["exit"] == 0
        and a["epochs lost"] == a["epochs logged twice"] == a["runs left RUNNING"] == 0
        and a["outcome disagreements"] == a["runs per trial above one"] == 0
        and a["registered versions"] == 1
        and a["champion is the best on validation"]
    )


def report(result: dict, trials: int, epochs: int) -> str:
    faults = result["faults"]
    kinds = Counter(f["kind"] for f in faults)
    dealt = "\n".join(f"| {kind} | {kinds.get(kind, 0)} |" for kind in KINDS)
    figures = "\n".join(f"| {k} | {result['audit'][k]} |" for k in FIGURES)
    verdict = "met" if held(result) and len(faults) >= 50 else "missed"
    return f"""
## Chaos: one sweep, {len(faults)} faults at random times

`{command()}` at commit {commit()} on {machine()}: {result["minutes"]:.0f} min, {result["drivers"]}
drivers in turn (each one killed, the next resumed the sweep with `--resume`).

A sweep of {trials} trials (TPE, ASHA, up to {epochs} epochs, 64 px shapes, 256 images) on a
loopback Ray of a head without CPUs and two one-CPU worker nodes, logging to a real `mlflow
server` on PostgreSQL, while faults were dealt 2-6 s apart (seed {result["seed"]}), every kind
once per round in a drawn order, only while a trial trained:

| fault | dealt |
|---|---|
{dealt}

Counted afterwards from Tune's experiment state, the Optuna study and the MLflow store, none of
it reported by the sweep itself:

| figure | count |
|---|---|
{figures}

Target: at least 50 faults, no epoch lost or logged twice: **{verdict}**.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=50, help="faults to deal (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="draws the faults and their times")
    parser.add_argument("--trials", type=int, default=64, help="trials of the sweep (64)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of a whole trial (6)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="vae-sweep-chaos-"))
    result = chaos(folder, args.faults, args.seed, args.trials, args.epochs, (2, 6))
    if held(result):
        shutil.rmtree(folder)
    else:  # the drivers' logs and the stores, to find out why
        print(f"kept {folder}: driver*.err, server.log, ray/{NAME}", file=sys.stderr)
    save_json("chaos", result)
    write_section("chaos", report(result, args.trials, args.epochs), doc=RELIABILITY)


if __name__ == "__main__":
    main()
