"""The checks a sweep makes before it spends compute, on real file systems and a real
multi-node Ray: each names the path or node and what would work."""

import dataclasses
import os

import pytest
import ray
from conftest import make_splits, small_disk, tiny_config
from ray.cluster_utils import Cluster

from sweeps import preflight
from sweeps.cluster import Cluster as SweepCluster
from vae_core import Config, fit


def test_checkpoint_size_estimate_matches_a_real_checkpoint(tmp_path):
    config = tiny_config(epochs=1)
    path = tmp_path / "checkpoint.safetensors"
    fit(config, make_splits()).save(path)
    estimate = preflight.checkpoint_bytes(config)
    assert path.stat().st_size <= estimate <= 2 * path.stat().st_size + 512 * 1024


def test_a_storage_path_that_cannot_be_written_is_named(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(preflight.PreflightError, match="cannot write there .Not a directory"):
        preflight.check_storage(str(tmp_path / "a_file" / "ray"), 2, tiny_config())


def test_a_disk_too_small_for_the_checkpoints_is_refused_up_front(tmp_path):
    config = Config.from_dict({"dataset": "shapes", "arch": "conv", "latent_dim": 32})
    with small_disk(tmp_path / "disk", "2m") as disk:
        with pytest.raises(preflight.PreflightError) as err:
            preflight.check_storage(str(disk / "ray"), 8, config)
    message = str(err.value)
    assert f"--storage-path {disk}/ray: 2 MiB free" in message
    assert f"8 trials x {preflight.CHECKPOINTS_PER_TRIAL} x" in message
    assert "free some space or pass another path" in message


def test_resume_reads_only_state_nobody_else_can_write(tmp_path):
    state = tmp_path / "sweep"
    state.mkdir()
    (state / "experiment_state.json").write_text("{}")
    preflight.check_own_state(str(state))
    os.chmod(state / "experiment_state.json", 0o666)
    with pytest.raises(preflight.PreflightError, match="anyone may write it; resuming unpickles"):
        preflight.check_own_state(str(state))


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_data_missing_on_worker_nodes_is_named_per_node(cluster, tmp_path):
    config = Config.from_dict({"dataset": "mnist", "data_path": str(tmp_path / "mnist.arrow")})
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_data_on_nodes(config)
    lines = [line for line in str(err.value).splitlines() if line.startswith("  node ")]
    assert len(lines) == 2  # both worker nodes; the head runs no trials
    assert all(f"data.data_path: {tmp_path / 'mnist.arrow'}: no such file" in x for x in lines)
    assert "prepare it once into a shared file" in str(err.value)
    shapes = config.replace(dataset="shapes", data_path=None)  # generated on each node
    preflight.check_data_on_nodes(shapes)


def test_a_trial_larger_than_every_node_is_refused_unless_the_cluster_may_grow(cluster, capsys):
    joined = SweepCluster.look(started_ray=False)
    assert joined.joined and len(joined.nodes) == 3
    fixed = dataclasses.replace(joined, startable=())  # an autoscaler that may start nothing
    fixed.check_fits(1, 0)
    with pytest.raises(preflight.PreflightError, match="no node has that much .the largest has"):
        fixed.check_fits(1, 1)
    dataclasses.replace(joined, startable=None).check_fits(2, 0)  # may add a bigger node
    assert "waiting for the autoscaler to add one" in capsys.readouterr().out
