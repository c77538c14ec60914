"""Checkpoints as one safetensors file: no pickle, so loading one executes no code.

Tensors: `model.*` (state dict), `optim.<param>.<key>` (Adam moments and step counts) and
`rng.*` (generator states, so a resumed run draws the same numbers as an uninterrupted one).
Metadata (strings): the format tag, the config, epoch, step, optimiser hyperparameters, the
metrics history and the device type of each generator (`rng_devices`: a CUDA generator's state
does not fit a CPU one), all as JSON, plus any `extra` strings a caller keeps (e.g. a tracker
run id).
Files are written to a temporary name and renamed: a crash never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vae_core.config import Config
from vae_core.model import VAE, build_model

FORMAT = "vae-sweep/checkpoint-1"
CHECKPOINT_NAME = "checkpoint.safetensors"
# A CPU generator's state (Mersenne Twister) is 5056 bytes; a CUDA (Philox) one's 16 (seed and
# offset). Files written before `rng_devices` was kept are told apart by this size.
CPU_RNG_STATE_BYTES = 5056


class CheckpointError(ValueError):
    """A file is not a readable vae-sweep checkpoint; the message names it."""


@dataclass
class Checkpoint:
    config: Config
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None = None
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    rng_devices: dict[str, str] = field(default_factory=dict)  # "noise": "cuda", per rng key
    extra: dict[str, str] = field(default_factory=dict)


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write `ckpt` to `path` atomically; returns the path."""
    path = Path(path)
    tensors = {f"model.{k}": v for k, v in ckpt.model_state.items()}
    tensors.update({f"rng.{k}": v for k, v in ckpt.rng.items()})
    groups = None
    if ckpt.optimizer_state is not None:
        for pid, state in ckpt.optimizer_state["state"].items():
            for key, value in state.items():
                tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value)
        groups = ckpt.optimizer_state["param_groups"]
    metadata = {
        "format": FORMAT,
        "config": json.dumps(ckpt.config.to_dict()),
        "epoch": str(ckpt.epoch),
        "step": str(ckpt.step),
        "optimizer_param_groups": json.dumps(groups),
        "history": json.dumps(ckpt.history),
        "rng_devices": json.dumps(ckpt.rng_devices),
        "extra": json.dumps(ckpt.extra),
    }
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint (tensors on CPU)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (FileNotFoundError, SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: cannot read as a safetensors checkpoint ({err})") from err
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a vae-sweep checkpoint (format "
            f"{metadata.get('format')!r}, expected {FORMAT!r})"
        )
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "rng": {}, "optim": {}}
    for key, value in tensors.items():
        kind, name = key.split(".", 1)
        parts[kind][name] = value
    groups = json.loads(metadata["optimizer_param_groups"])
    optimizer_state = None
    if groups is not None:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in parts["optim"].items():
            pid, key = name.split(".", 1)
            state.setdefault(int(pid), {})[key] = value
        optimizer_state = {"state": state, "param_groups": groups}
    return Checkpoint(
        config=Config.from_dict(_renamed(json.loads(metadata["config"]))),
        model_state=parts["model"],
        optimizer_state=optimizer_state,
        epoch=int(metadata["epoch"]),
        step=int(metadata["step"]),
        history=json.loads(metadata["history"]),
        rng=parts["rng"],
        rng_devices=json.loads(metadata.get("rng_devices", "{}")),
        extra=json.loads(metadata["extra"]),
    )


def rng_device(ckpt: Checkpoint, name: str) -> str:
    """The device type ("cpu", "cuda") that generator `name`'s saved state comes from."""
    if name in ckpt.rng_devices:
        return ckpt.rng_devices[name]
    # Written before the devices were kept: cuda is the only other device vae-train runs on.
    return "cpu" if ckpt.rng[name].numel() == CPU_RNG_STATE_BYTES else "cuda"


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex): what a registered version's weights are checked
    against."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> VAE:
    """The VAE stored at `path` (a checkpoint file or a run folder), in eval mode on `device`."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt.config)
    model.load_state_dict(ckpt.model_state)
    return model.to(device).eval()


def _renamed(config: dict) -> dict:
    """A config as saved before `model.channels` (conv widths) was renamed `model.widths`, so
    that it no longer reads as the image channels: checkpoints of 0.1.0 load as they were."""
    model = config.get("model", {})
    if "channels" in model:
        model["widths"] = model.pop("channels")
    return config
