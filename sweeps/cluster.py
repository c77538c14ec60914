"""The Ray cluster a sweep runs on: the nodes it has now and the ones its autoscaler may start.

Trials ask for a GPU by default when the cluster has one or can get one. On a cluster started
by `ray up`, the GPU workers usually do not exist yet when `ray submit` starts the driver (min
0 workers), so the nodes that are up say nothing; the autoscaler's config does: `ray up`
leaves it on the head at ~/ray_bootstrap_config.yaml, where the driver runs, with each node
type's resources (filled in from the instance type on AWS) and how many of it may be started.

Ray has no public API for that config nor for "did this driver start its own Ray"; both
private reads are here, in one place to check on a Ray upgrade.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import ray
import yaml

from sweeps.preflight import PreflightError

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` writes the head's config


@dataclass(frozen=True)
class NodeType:
    """A kind of node the autoscaler may start."""

    name: str
    resources: Mapping[str, float]  # empty: left to be detected when such a node starts
    max_workers: int

    def fits(self, cpus: float, gpus: float) -> bool:
        """Whether one such node can hold a trial (unknown resources: it may)."""
        if not self.resources:
            return True
        return self.resources.get("CPU", 0) >= cpus and self.resources.get("GPU", 0) >= gpus


def node_types(path: str | Path = BOOTSTRAP_CONFIG) -> tuple[NodeType, ...] | None:
    """The node types an autoscaler config may start (max_workers > 0), as Ray defaults them:
    the head type at most 0 workers, the others the config's global max_workers. None when
    there is no such config here."""
    file = Path(path).expanduser()
    if not file.is_file():
        return None
    config = yaml.safe_load(file.read_text()) or {}
    everything = config.get("max_workers", 2)
    types = []
    for name, node_type in (config.get("available_node_types") or {}).items():
        is_head = name == config.get("head_node_type")
        most = node_type.get("max_workers", 0 if is_head else everything)
        if most > 0:
            types.append(NodeType(name, dict(node_type.get("resources") or {}), int(most)))
    return tuple(types)


def joined(started_ray: bool) -> bool:
    """True when this driver joined a running cluster (`ray submit`, RAY_ADDRESS), whose
    autoscaler may add nodes, rather than starting a local Ray of its own. ray.init() joins a
    cluster started on this machine without saying so; its node object tells (private API)."""
    node = getattr(ray._private.worker, "_global_node", None)
    return not (started_ray and getattr(node, "head", False))


@dataclass(frozen=True)
class Cluster:
    """What the cluster has (alive nodes' resources) and may get (None: cannot tell)."""

    nodes: tuple[Mapping[str, float], ...]
    startable: tuple[NodeType, ...] | None
    joined: bool

    @classmethod
    def look(cls, started_ray: bool) -> Cluster:
        nodes = tuple(n["Resources"] for n in ray.nodes() if n["Alive"])
        is_joined = joined(started_ray)
        return cls(nodes, node_types() if is_joined else (), is_joined)

    def trial_resources(self, cpus: float, gpus: float | None) -> dict[str, float]:
        """What each trial asks for: the flags, GPUs defaulting to what the cluster can have;
        checked against the nodes, up or startable."""
        if gpus is None:
            gpus, why = self.default_gpus()
            print(
                f"vae-sweep: each trial asks for {cpus:g} CPU and {gpus:g} GPU ({why}; "
                "--gpus-per-trial sets it)",
                flush=True,
            )
        self.check_fits(cpus, gpus)
        return {"cpu": cpus, "gpu": gpus}

    def default_gpus(self) -> tuple[float, str]:
        """1 when some node has a GPU or the autoscaler may start one that has; 0 when none
        has and none can come; with the reason. Refuses, naming --gpus-per-trial, when it
        cannot tell."""
        if any(node.get("GPU", 0) > 0 for node in self.nodes):
            return 1.0, "a node has a GPU"
        if self.startable is None:
            raise PreflightError(
                "--gpus-per-trial: no node of this cluster has a GPU yet, and its autoscaler's "
                f"node types are not readable here (no {BOOTSTRAP_CONFIG}: this driver does not "
                "run on the head of a `ray up` cluster); give --gpus-per-trial 1 (or a fraction, "
                "to pack trials on a GPU) for GPU trials, or 0 for CPU trials"
            )
        if with_gpu := [t.name for t in self.startable if t.resources.get("GPU", 0) > 0]:
            return 1.0, f"the autoscaler may start {with_gpu[0]} nodes, which have GPUs"
        if unknown := [t.name for t in self.startable if not t.resources]:
            raise PreflightError(
                f"--gpus-per-trial: no node has a GPU yet, and the autoscaler may start nodes "
                f"of type {', '.join(unknown)} whose resources {BOOTSTRAP_CONFIG} leaves to be "
                "detected when they start; give --gpus-per-trial 1 (or a fraction) for GPU "
                "trials or 0 for CPU trials, or declare the type's resources in the cluster "
                'config (resources: {"CPU": 4, "GPU": 1})'
            )
        if self.joined:
            return 0.0, "no node has a GPU and the autoscaler may start none that has"
        return 0.0, "this machine has no GPU Ray can use"

    def check_fits(self, cpus: float, gpus: float) -> None:
        """Some node, up or startable, must be able to hold one trial; when only a node the
        autoscaler may start can, say that the sweep waits for it."""
        if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in self.nodes):
            return
        most = max(self.nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        message = (
            f"--cpus-per-trial {cpus:g} / --gpus-per-trial {gpus:g}: no node has that much "
            f"(the largest has {most.get('CPU', 0):g} CPUs, {most.get('GPU', 0):g} GPUs)"
        )
        if self.joined and self.startable is None:
            print(f"vae-sweep: {message}; waiting for the autoscaler to add one", flush=True)
            return
        if fitting := [t.name for t in self.startable or () if t.fits(cpus, gpus)]:
            print(
                f"vae-sweep: {message}; waiting for the autoscaler to start a node of type "
                f"{fitting[0]}",
                flush=True,
            )
            return
        if self.startable:
            kinds = ", ".join(f"{t.name} {dict(t.resources)}" for t in self.startable)
            raise PreflightError(
                f"{message}, nor does a node the autoscaler may start "
                f"({kinds}); ask for less per trial"
            )
        raise PreflightError(message + "; ask for less per trial")
