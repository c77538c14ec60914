"""`fit`: train one VAE from a Config, reporting through a callback after every epoch.

The trainer knows nothing of trackers or schedulers: a sweep passes `on_epoch_end`, which gets
the TrainState (metrics in `state.history[-1]`, `state.save(path)` for a checkpoint) and may
return True to stop. With the same seed, CPU runs repeat bit for bit, and a run resumed from a
checkpoint draws the same numbers as one that never stopped.

Resuming refuses, by name, a config that changes what the weights mean (RESUME_INVARIANTS,
mean_activation among them: the same decoder output read through a sigmoid or not is another
model). A *fixed* sigma_x is a setting of the loss, not a weight: a new one is applied (the
buffer takes the config's value) and logged; a learned sigma_x goes on from its trained value
(the config's is only its initial one). A generator state saved on another device type (a
checkpoint from a GPU resumed on CPU) does not fit: that generator is reseeded from the seed
and the step, and a warning says so; on the same device type the state is restored exactly.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch
from tqdm.auto import tqdm

from vae_core.checkpoint import Checkpoint, read_checkpoint, rng_device, save_checkpoint
from vae_core.config import Config, ConfigError
from vae_core.data import Splits, load_splits, shuffled_batches
from vae_core.factors import factor_scores
from vae_core.metrics import effective_beta, elbo_terms, evaluate, training_loss
from vae_core.model import VAE, build_model

EpochCallback = Callable[["TrainState"], bool | None]
log = logging.getLogger(__name__)


class DivergenceError(FloatingPointError):
    """The loss or the gradients became NaN/inf; the message names the config and the step."""


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"train.device is {name!r} but no CUDA GPU is visible; use 'auto' or 'cpu'"
        )
    return device


@dataclass
class TrainState:
    config: Config
    model: VAE
    optimizer: torch.optim.Optimizer
    shuffle_rng: torch.Generator  # epoch order; on CPU
    noise_rng: torch.Generator  # dequantisation and reparameterisation noise; on the device
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # caller's strings, kept in checkpoints

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            config=self.config,
            model_state=self.model.state_dict(),
            optimizer_state=self.optimizer.state_dict(),
            epoch=self.epoch,
            step=self.step,
            history=self.history,
            extra=self.extra,
            rng={"shuffle": self.shuffle_rng.get_state(), "noise": self.noise_rng.get_state()},
            rng_devices={
                "shuffle": self.shuffle_rng.device.type,
                "noise": self.noise_rng.device.type,
            },
        )

    def save(self, path: str | os.PathLike) -> None:
        save_checkpoint(path, self.checkpoint())


def _new_state(config: Config, device: torch.device) -> TrainState:
    torch.manual_seed(config.train.seed)  # weight initialisation
    model = build_model(config).to(device)
    return TrainState(
        config=config,
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=config.train.lr),
        shuffle_rng=torch.Generator().manual_seed(config.train.seed),
        noise_rng=torch.Generator(device).manual_seed(config.train.seed + 1),
    )


# What a resumed run may not change: the weights would not fit, or would mean something else.
RESUME_INVARIANTS = (
    "model.arch",
    "model.latent_dim",
    "model.likelihood",
    "model.mean_activation",  # a sigmoid/tanh on the decoder's mean or none: another model
    "model.activation",
    "model.hidden_dims",
    "model.widths",
    "model.refine",
    "data.dataset",
    "data.image_size",
    "data.pixel_range",
    "data.binarize",
)


def _restore_state(ckpt: Checkpoint, config: Config, device: torch.device) -> TrainState:
    """A state that continues `ckpt` under `config` (which may change e.g. epochs or lr)."""
    saved = ckpt.config.flat() | {"data.image_size": ckpt.config.image_size}
    wanted = config.flat() | {"data.image_size": config.image_size}
    for key in RESUME_INVARIANTS:
        if saved[key] != wanted[key]:
            raise ConfigError(
                f"{key}: the checkpoint was trained with {saved[key]!r}, the config asks for "
                f"{wanted[key]!r}; a run resumes only with the same model and data: set {key} "
                f"back to {saved[key]!r}, or start a new run"
            )
    state = _new_state(config, device)
    weights = dict(ckpt.model_state)
    if config.model.likelihood == "gaussian" and saved["model.sigma_x"] != wanted["model.sigma_x"]:
        weights["log_sigma_x"] = state.model.log_sigma_x.detach().clone()  # the config's value
        log.warning(
            "model.sigma_x: the checkpoint was trained with %r, the config asks for %r; a fixed "
            "sigma_x is a setting of the loss, not a weight: the run goes on with %r",
            saved["model.sigma_x"],
            wanted["model.sigma_x"],
            wanted["model.sigma_x"],
        )
    state.model.load_state_dict(weights)
    if ckpt.optimizer_state is not None:
        state.optimizer.load_state_dict(ckpt.optimizer_state)
        for group in state.optimizer.param_groups:  # the config's lr wins over the saved one
            group["lr"] = config.train.lr
    for name, generator in (("shuffle", state.shuffle_rng), ("noise", state.noise_rng)):
        if name in ckpt.rng:
            _restore_rng(generator, name, ckpt, config.train.seed)
    state.epoch, state.step = ckpt.epoch, ckpt.step
    state.history, state.extra = list(ckpt.history), dict(ckpt.extra)
    return state


def _restore_rng(generator: torch.Generator, name: str, ckpt: Checkpoint, seed: int) -> None:
    """The saved state of generator `name` where it was saved on this device type (a bit-exact
    resume); else (a CUDA state of 16 bytes for a CPU generator of 5056, or back) a reseed
    from (seed, name, step), the same on every resume of that checkpoint, logged."""
    saved_on = rng_device(ckpt, name)
    if saved_on == generator.device.type:
        generator.set_state(ckpt.rng[name])
        return
    digest = hashlib.sha256(f"{seed}/{name}/{ckpt.step}".encode()).digest()
    generator.manual_seed(int.from_bytes(digest[:8], "little"))
    log.warning(
        "resume: the checkpoint's %s generator state was saved on %s, this run is on %s, where "
        "it does not fit: reseeded from seed %d and step %d (the run goes on, but draws other "
        "numbers than an unbroken run would)",
        name,
        saved_on,
        generator.device.type,
        seed,
        ckpt.step,
    )


def _train_epoch(
    state: TrainState, images: torch.Tensor, device: torch.device, bar: Any | None
) -> float:
    """One pass over `images` (uint8); returns the mean training loss per image."""
    cfg, model = state.config.train, state.model
    model.train()
    autocast = torch.autocast(
        "cuda", dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"
    )
    total, seen = 0.0, 0
    for index in shuffled_batches(len(images), cfg.batch_size, state.shuffle_rng):
        batch = images.index_select(0, index.to(images.device))  # 4x faster than images[index]
        x = model.coding.encode(batch.to(device, non_blocking=True), state.noise_rng)
        with autocast:
            log_px, kl = elbo_terms(model, x, state.noise_rng)
        loss = training_loss(log_px, kl, cfg.kl_weight)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), cfg.grad_clip if cfg.grad_clip is not None else math.inf
        )
        state.step += 1
        loss_value = loss.item()
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm.item())):
            _diverged(state, loss_value, grad_norm.item())
        state.optimizer.step()
        total += loss_value * len(index)
        seen += len(index)
        if bar is not None:
            bar.update(len(index))
            bar.set_postfix(loss=f"{loss_value:.1f}", refresh=False)
    return total / seen


def _diverged(state: TrainState, loss: float, grad_norm: float) -> NoReturn:
    m, t = state.config.model, state.config.train
    raise DivergenceError(
        f"training diverged at epoch {state.epoch + 1}, step {state.step}: loss={loss}, "
        f"grad_norm={grad_norm} (arch={m.arch}, latent_dim={m.latent_dim}, "
        f"likelihood={m.likelihood}, sigma_x={m.sigma_x}, kl_weight={t.kl_weight}, lr={t.lr}, "
        f"seed={t.seed}). Lower train.lr, raise sigma_x, or set train.grad_clip."
    )


def _on_device_if_it_fits(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The uint8 training images on the GPU when they take under a quarter of its free memory
    (no host-to-device copy per batch), else where they are (memory-mapped on the host)."""
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    return images.to(device) if images.numel() < free // 4 else images


def _check_shapes(config: Config, data: Splits) -> None:
    expected = (config.channels, config.image_size, config.image_size)
    for name in ("train", "val", "test"):
        images = getattr(data, name).images
        if tuple(images.shape[1:]) != expected or images.dtype != torch.uint8:
            raise ValueError(
                f"data.{name}: images are {images.dtype} {tuple(images.shape[1:])}"
                f", the config expects uint8 {expected} (C, H, W)"
            )
        if len(images) == 0:
            raise ValueError(f"data.{name}: no images")


def fit(
    config: Config,
    data: Splits | None = None,
    *,
    on_epoch_end: EpochCallback | None = None,
    resume_from: str | os.PathLike | Checkpoint | None = None,
    progress: bool = False,
) -> TrainState:
    """Train `config` on `data` (loaded from the config when None) for config.train.epochs.

    resume_from: a checkpoint (path or object) to continue from; its epochs count towards
    config.train.epochs. progress: show a tqdm bar per epoch on stderr.
    """
    device = select_device(config.train.device)
    data = data if data is not None else load_splits(config)
    _check_shapes(config, data)
    if resume_from is not None:
        ckpt = resume_from if isinstance(resume_from, Checkpoint) else read_checkpoint(resume_from)
        state = _restore_state(ckpt, config, device)
    else:
        state = _new_state(config, device)
    train_images = _on_device_if_it_fits(data.train.images, device)
    while state.epoch < config.train.epochs:
        start = time.perf_counter()
        bar = None
        if progress:
            desc = f"epoch {state.epoch + 1}/{config.train.epochs}"
            bar = tqdm(total=len(data.train), unit="img", desc=desc, dynamic_ncols=True)
        train_loss = _train_epoch(state, train_images, device, bar)
        metrics = evaluate(state.model, data.val.images)  # same noise for every trial
        if data.val.factors:  # known generative factors (shapes): how much the code holds
            scores = factor_scores(state.model, data.val.images, data.val.factors)
            metrics.update({f"val_{name}": value for name, value in scores.items()})
        state.epoch += 1
        record = {
            "epoch": state.epoch,
            "step": state.step,
            "train_loss": train_loss,
            **metrics,
            "beta": config.train.kl_weight,
            "sigma_x": state.model.sigma_x,
            "effective_beta": effective_beta(state.model, config.train.kl_weight),
            "epoch_seconds": time.perf_counter() - start,
        }
        state.history.append(record)
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss:.1f}", val_bpd=f"{metrics['val_bpd']:.4f}")
            bar.close()
        if on_epoch_end is not None and on_epoch_end(state):
            break
    return state
