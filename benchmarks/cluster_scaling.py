"""Trials per minute of one sweep on a loopback Ray cluster with one worker node, then two.

    python benchmarks/cluster_scaling.py --trials 8

Each run starts a `ray.cluster_utils.Cluster` (a head with no CPU for trials, N worker nodes of
one CPU each), copies `sweeps/shapes.py` to a fresh folder and runs it there with RAY_ADDRESS
set, as `ray submit` does. The sweep is the smoke-test one (256 images) with ASHA's grace period
equal to the epoch count, so every trial trains the same number of epochs whatever the node
count. Reports the wall time of the whole command (start-up, trials, test evaluation,
registration) and of the trial phase alone (first trial run started to last ended, from the
MLflow runs), and the ratio of two nodes to one. Writes docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
from _report import command, commit, machine, save_json, write_section
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

REPO = Path(__file__).resolve().parents[1]


def sweep_on(workers: int, trials: int, epochs: int, folder: Path) -> dict:
    """Run the sweep against a fresh cluster of `workers` one-CPU nodes; return its timings."""
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0})
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        shutil.copy(REPO / "sweeps" / "shapes.py", folder / "shapes.py")
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        command = [
            sys.executable,
            "shapes.py",
            "--smoke-test",
            f"--num-samples={trials}",
            f"--max-epochs={epochs}",
            f"--grace-period={epochs}",  # ASHA stops nothing: every trial does the same work
            "--gpus-per-trial=0",  # CPU nodes, and no autoscaler config to say none can come
            f"--storage-path={folder / 'ray'}",
            f"--tracking-uri={uri}",
        ]
        env = {**os.environ, "RAY_ADDRESS": cluster.address}
        env.pop("MLFLOW_TRACKING_URI", None)
        start = time.perf_counter()
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"sweep on {workers} node(s) failed:\n{result.stderr[-3000:]}")
    finally:
        cluster.shutdown()
    runs = [
        run
        for run in MlflowClient(uri).search_runs(["1"])
        if run.data.tags.get("vae_sweep.role") == "trial"
    ]
    finished = [run for run in runs if run.info.status == "FINISHED"]
    first = min(run.info.start_time for run in runs) / 1000
    last = max(run.info.end_time for run in runs) / 1000
    return {
        "workers": workers,
        "trials": len(finished),
        "nodes_used": len({run.data.tags["ray.node_id"] for run in runs}),
        "wall_s": wall,
        "trial_phase_s": last - first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per sweep (default 8)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4)")
    args = parser.parse_args()
    rows = []
    for workers in (1, 2):
        with tempfile.TemporaryDirectory(prefix=f"scaling{workers}-") as folder:
            row = sweep_on(workers, args.trials, args.epochs, Path(folder))
        print(row, flush=True)
        rows.append(row)
    one, two = rows
    lines = [
        "| worker nodes | trials finished | nodes used | wall (s) | trials/min (wall) "
        "| trial phase (s) | trials/min (trial phase) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['workers']} | {row['trials']} | {row['nodes_used']} | {row['wall_s']:.0f} "
            f"| {60 * row['trials'] / row['wall_s']:.1f} | {row['trial_phase_s']:.0f} "
            f"| {60 * row['trials'] / row['trial_phase_s']:.1f} |"
        )
    speedup_wall = one["wall_s"] / two["wall_s"]
    speedup_trials = one["trial_phase_s"] / two["trial_phase_s"]
    body = f"""
## Sweep throughput on a loopback cluster: one worker node against two

`{command()}` at commit {commit()}, on {machine()}, ray {ray.__version__}, one session.
Each run: a fresh `ray.cluster_utils.Cluster` (head with 0 CPUs, N worker nodes of
1 CPU), `sweeps/shapes.py --smoke-test` copied outside the repo and run with RAY_ADDRESS,
{args.trials} trials x {args.epochs} epochs on 256 images, ASHA's grace period = epochs so no
trial is stopped early.

{chr(10).join(lines)}

Two worker nodes against one: **{speedup_wall:.2f}x** on the whole command,
**{speedup_trials:.2f}x** on the trial phase. The fixed part of the command (driver
start-up, MLflow store, the best trial's test evaluation and registration) does not shrink with
nodes, and here the two "nodes" share the machine's {os.cpu_count()} cores with the driver,
the GCS and the MLflow writes; on a real cluster each GPU worker brings its own cores and GPU.
"""
    save_json("cluster_scaling", {"runs": rows, "speedup_wall": speedup_wall,
                                  "speedup_trial_phase": speedup_trials})  # fmt: skip
    write_section("cluster_scaling", body)


if __name__ == "__main__":
    main()
