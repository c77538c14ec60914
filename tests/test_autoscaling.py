"""Ray's real autoscaler, on a fake node provider that starts real raylets on this machine,
with the node types of cluster/config.yaml (a head with no CPU, GPU workers from 0): the sweep
joins it as `ray submit` would and its trials ask for GPUs the cluster does not have yet.
The autoscaler's config sits where `ray up` leaves it on the head (~/ray_bootstrap_config.yaml,
here in a HOME of the test's own)."""

import os
import shutil
import subprocess
import sys

import yaml
from conftest import REPO, migrated_store
from mlflow.tracking import MlflowClient
from servers import RAY_CLI, free_port, whole_machine_ray

from sweeps.tracking import ROLE

HEAD_ID = "f" * 51 + "00000"  # the fake provider's node ids: the head, then 00001, 00002, ...


COMMANDS = ("cluster_synced_files", "initialization_commands", "setup_commands")
COMMANDS += ("head_setup_commands", "worker_setup_commands", "head_start_ray_commands")
COMMANDS += ("worker_start_ray_commands",)  # none: the fake provider starts raylets itself


def fake_cluster_config(port: int) -> dict:
    """cluster/config.yaml's node types on the fake provider (at most 2 workers here)."""
    committed = yaml.safe_load((REPO / "cluster" / "config.yaml").read_text())
    types = committed["available_node_types"]
    head = types.pop(committed["head_node_type"])
    for node_type in types.values():
        node_type["max_workers"] = min(node_type["max_workers"], 2)
        node_type["node_config"] = {}
    types["ray.head.default"] = {**head, "node_config": {}, "max_workers": 0}  # the fake's name
    provider = {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{port}"}
    provider.update(use_node_id_as_ip=True, disable_node_updaters=True)
    provider.update(disable_launch_config_check=True)  # nodes are processes here, no SSH
    return {
        "cluster_name": "fake",
        "max_workers": 2,
        "upscaling_speed": committed["upscaling_speed"],
        "idle_timeout_minutes": 1,
        "provider": provider,
        "auth": {"ssh_user": "ray"},
        "available_node_types": types,
        "head_node_type": "ray.head.default",
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
        **{key: [] for key in COMMANDS},
    }


def test_a_sweep_on_an_autoscaling_cluster_makes_it_start_gpu_workers(tmp_path):
    home, port = tmp_path / "home", free_port()
    home.mkdir()
    config = home / "ray_bootstrap_config.yaml"
    config.write_text(yaml.safe_dump(fake_cluster_config(port)))
    env = {**os.environ, "HOME": str(home), "RAY_FAKE_CLUSTER": "1"}
    env["AUTOSCALER_UPDATE_INTERVAL_S"] = "1"
    shutil.copy(REPO / "sweeps" / "shapes.py", tmp_path / "shapes.py")
    uri = migrated_store(tmp_path / "mlflow.db")
    with whole_machine_ray():
        subprocess.run(
            [RAY_CLI, "start", "--head", "--num-cpus=0", f"--port={port}", "--disable-usage-stats"]
            + ["--node-ip-address=127.0.0.1", f"--autoscaling-config={config}"]
            + ["--include-dashboard=false"],
            env=env,
            check=True,
            capture_output=True,
        )
        sweep = subprocess.run(
            [sys.executable, "shapes.py", "--smoke-test", "--name", "grown"]
            + ["--tracking-uri", uri, "--storage-path", str(tmp_path / "ray")],
            cwd=tmp_path,
            env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    asked = "each trial asks for 1 CPU and 1 GPU (the autoscaler may start gpu_worker nodes"
    assert asked in sweep.stdout
    runs = MlflowClient(uri).search_runs(["1"])
    trials = [r for r in runs if r.data.tags.get(ROLE) == "trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    for run in trials:  # on a started worker, with the GPU it asked for; no CUDA here: said so
        assert run.data.tags["ray.node_id"] != HEAD_ID
        assert run.data.params["resources.gpu"] == "1.0"
        device = run.data.tags["vae_sweep.device"]
        assert device == "cpu (1 GPU given, but torch sees no CUDA device)"
    (parent,) = [r for r in runs if r.data.tags.get(ROLE) == "sweep"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["vae_sweep.evaluated_on"] not in ("", HEAD_ID)  # on a GPU worker
