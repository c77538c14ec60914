"""What each trial asks for, from what the cluster has and what its autoscaler may start: the
autoscaler configs here are shaped as `ray up` leaves them on the head
(~/ray_bootstrap_config.yaml), from cluster/config.yaml and cluster/local.yaml."""

import pytest
import yaml

from sweeps.cluster import Cluster, node_types
from sweeps.preflight import PreflightError

CPU_HEAD = {"CPU": 8}  # resources of the alive head, as ray.nodes() gives them


def bootstrap(tmp_path, worker: dict, **config) -> str:
    path = tmp_path / "ray_bootstrap_config.yaml"
    head = {"resources": {"CPU": 0}, "node_config": {}}
    types = {"head": head, "gpu_worker": {"node_config": {}, **worker}}
    config = {"max_workers": 8, "head_node_type": "head", "available_node_types": types, **config}
    path.write_text(yaml.safe_dump(config))
    return str(path)


def cluster(tmp_path, worker: dict, nodes=(CPU_HEAD,), **config) -> Cluster:
    return Cluster(tuple(nodes), node_types(bootstrap(tmp_path, worker, **config)), joined=True)


def test_gpu_workers_the_autoscaler_may_start_make_gpu_trials(tmp_path, capsys):
    up = cluster(tmp_path, {"resources": {"CPU": 4, "GPU": 1}, "min_workers": 0, "max_workers": 2})
    assert [t.name for t in up.startable] == ["gpu_worker"]  # the head may start no worker
    assert up.trial_resources(2, None) == {"cpu": 2, "gpu": 1.0}
    out = capsys.readouterr().out
    assert "each trial asks for 2 CPU and 1 GPU (the autoscaler may start gpu_worker" in out
    assert "waiting for the autoscaler to start a node of type gpu_worker" in out
    assert up.trial_resources(1, 0.25) == {"cpu": 1, "gpu": 0.25}  # the flag wins


def test_a_worker_type_without_its_own_max_takes_the_cluster_s(tmp_path):
    up = cluster(tmp_path, {"resources": {"CPU": 4, "GPU": 1}}, max_workers=3)
    assert [(t.name, t.max_workers) for t in up.startable] == [("gpu_worker", 3)]


def test_a_cluster_that_can_get_no_gpu_trains_on_cpu(tmp_path):
    up = cluster(tmp_path, {"resources": {"CPU": 4}, "max_workers": 2})
    why = "no node has a GPU and the autoscaler may start none that has"
    assert up.default_gpus() == (0.0, why)
    no_more = cluster(tmp_path, {"resources": {"CPU": 4, "GPU": 1}, "max_workers": 0})
    assert no_more.default_gpus()[0] == 0.0  # GPU workers it may not start do not count


def test_a_gpu_node_that_is_up_makes_gpu_trials_whatever_the_config(tmp_path):
    up = Cluster((CPU_HEAD, {"CPU": 4, "GPU": 1}), None, joined=True)
    assert up.default_gpus() == (1.0, "a node has a GPU")
    assert Cluster(({"CPU": 2},), (), joined=False).default_gpus()[0] == 0.0  # local Ray


def test_when_the_engine_cannot_tell_it_refuses_naming_the_flag(tmp_path):
    unreadable = Cluster((CPU_HEAD,), node_types(tmp_path / "none.yaml"), joined=True)
    with pytest.raises(PreflightError, match="^--gpus-per-trial: no node of this cluster has a "):
        unreadable.trial_resources(1, None)
    assert unreadable.trial_resources(1, 0) == {"cpu": 1, "gpu": 0}  # said: no question left
    # cluster/local.yaml's one node type: Ray detects its resources when a machine joins
    local = cluster(tmp_path, {"resources": {}, "max_workers": 2})
    with pytest.raises(PreflightError, match="type gpu_worker whose resources .* detected"):
        local.default_gpus()


def test_a_trial_no_node_type_can_hold_is_refused_before_compute(tmp_path):
    up = cluster(tmp_path, {"resources": {"CPU": 4, "GPU": 1}, "max_workers": 2})
    with pytest.raises(PreflightError, match="nor does a node the autoscaler may start .gpu_"):
        up.check_fits(8, 1)
