"""A real multi-node Ray on loopback (a head and two worker nodes) runs a sweep the way
`ray submit` does: the script file alone, copied outside the repo, run with RAY_ADDRESS set."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster


@pytest.fixture
def cluster():
    # The head gets no CPU: every trial must go to a worker node.
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, {node.node_id for node in nodes}
    cluster.shutdown()


def test_trials_spread_over_both_worker_nodes(cluster, tmp_path):
    cluster, worker_ids = cluster
    shutil.copy(REPO / "sweeps" / "shapes.py", tmp_path / "shapes.py")
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        [
            sys.executable,
            "shapes.py",
            "--smoke-test",
            "--num-samples",
            "4",
            "--storage-path",
            str(tmp_path / "ray"),
            "--tracking-uri",
            uri,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(uri)
    trials = [r for r in client.search_runs(["1"]) if r.data.tags.get("vae_sweep.role") == "trial"]
    nodes = {r.data.tags["ray.node_id"] for r in trials}
    assert len(trials) == 4 and nodes == worker_ids  # both workers, never the head
    assert "registered   shapes-vae version 1" in result.stdout
