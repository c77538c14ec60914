"""A real multi-node Ray on loopback (a head and two worker nodes) runs a sweep the way
`ray submit` does: the script file alone, copied outside the repo, run with RAY_ADDRESS set,
and loses a worker node in the middle."""

import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import REPO, migrated_store
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster
from record import record

from sweeps.tracking import ROLE


@pytest.fixture
def cluster():
    # The head gets no CPU: every trial must go to a worker node. The workers declare a GPU
    # each (a Ray resource; there is no CUDA here), as the GPU nodes of cluster/config.yaml.
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, {node.node_id for node in nodes}
    cluster.shutdown()


def test_a_lost_worker_node_s_trial_finishes_on_the_other_from_its_checkpoint(cluster, tmp_path):
    """Two trials spread over the two one-CPU workers (never the head, which has no CPU);
    one worker node is removed mid-sweep and its trial finishes on the other; the best model's
    test evaluation runs on a worker too, not beside the driver."""
    cluster, worker_ids = cluster
    nodes = {node.node_id: node for node in cluster.worker_nodes}
    shutil.copy(REPO / "sweeps" / "shapes.py", tmp_path / "shapes.py")
    uri = migrated_store(tmp_path / "mlflow.db")
    flags = ["--num-samples", "2", "--max-epochs", "6", "--grace-period", "6", "--name", "lost"]
    flags += ["--fresh-workers"]  # one actor per trial: the restored one starts anew anyway
    sweep = subprocess.Popen(
        [sys.executable, "shapes.py", "--smoke-test", *flags, "--tracking-uri", uri]
        + ["--storage-path", str(tmp_path / "ray")],
        cwd=tmp_path,
        env={**os.environ, "RAY_ADDRESS": cluster.address},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def trial_runs():
        return [
            r for r in MlflowClient(uri).search_runs(["1"]) if r.data.tags.get(ROLE) == "trial"
        ]

    def checkpointed_twice():  # trials with a second checkpoint (older ones are deleted)
        found = (tmp_path / "ray" / "lost").glob("*/checkpoint_*")
        return {path.parent for path in found if int(path.name.split("_")[1]) >= 1}

    deadline = time.monotonic() + 600
    while len(checkpointed_twice()) < 2:
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()[1][-3000:]
        time.sleep(0.2)
    assert {r.data.tags["ray.node_id"] for r in trial_runs()} == worker_ids  # both, not the head
    for run in trial_runs():  # a GPU each by default on a cluster with GPUs; no CUDA: said so
        assert run.data.params["resources.gpu"] == "1.0"
        assert (
            run.data.tags["vae_sweep.device"] == "cpu (1 GPU given, but torch sees no CUDA device)"
        )
    victim = trial_runs()[0]
    lost_node = victim.data.tags["ray.node_id"]
    cluster.remove_node(nodes[lost_node], allow_graceful=False)
    removed_at = time.time()
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    runs = trial_runs()
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    moved = next(r for r in runs if r.info.run_id == victim.info.run_id)
    assert moved.data.tags["ray.node_id"] != lost_node  # restored on the surviving node
    history = MlflowClient(uri).get_metric_history(moved.info.run_id, "val_bpd")
    steps = {m.step for m in history}
    assert steps == set(range(1, 7))
    assert "registered   shapes32-vae-smoke version 1" in out
    parent = next(
        r for r in MlflowClient(uri).search_runs(["1"]) if r.data.tags.get(ROLE) == "sweep"
    )
    assert parent.data.tags["vae_sweep.evaluated_on"] in worker_ids  # the best, on a worker
    record(
        "worker node lost mid-sweep",
        test="tests/test_cluster.py::test_a_lost_worker_node_s_trial_finishes_on_the_other_from_its_checkpoint",
        trials=2,
        trials_lost=sum(r.info.status != "FINISHED" for r in runs),
        duplicate_runs=len(runs) - 2,
        left_running=sum(r.info.status == "RUNNING" for r in runs),
        points_missing=6 - len(steps),
        seconds_to_recover=round(
            min(m.timestamp / 1000 for m in history if m.timestamp / 1000 > removed_at)
            - removed_at,
            1,
        ),
    )
