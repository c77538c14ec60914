"""Typed run configuration: model, data and training sections, validated at the edge.

A config is built from the plain dict Ray Tune hands over (nested by section, or flat: every
field name is unique across sections), from `vae-train` flags, or from a YAML file. Every
check names the field, the bad value and what would be accepted, and runs before any compute.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from vae_core.architectures import ARCHITECTURES, image_size_error

LIKELIHOODS = ("gaussian", "gaussian_learned", "bernoulli")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "softplus", "tanh", "sigmoid")
PIXEL_RANGES = ("unit", "signed")  # [0, 1] or [-1, 1] inside the model

# name -> (channels, native image size). The readers live in vae_core.data.
DATASETS: dict[str, tuple[int, int]] = {
    "mnist": (1, 28),
    "fashion_mnist": (1, 28),
}


class ConfigError(ValueError):
    """A config field has a value that cannot work; the message says which and what would."""


def _field(default: Any, doc: str) -> Any:
    """A dataclass field whose `doc` becomes the `vae-train --help` text of its flag."""
    return field(default=default, metadata={"doc": doc})


@dataclass
class ModelConfig:
    arch: str = _field("conv", "network family: mlp | conv | conv_bn")
    latent_dim: int = _field(16, "size of the latent code z")
    likelihood: str = _field(
        "gaussian", "p(x|z): gaussian (fixed sigma_x) | gaussian_learned (one shared, learned "
        "sigma_x) | bernoulli (binarised pixels)")
    sigma_x: float = _field(
        0.1, "decoder noise std on the [0, 1] pixel scale (the initial value when learned)")
    activation: str = _field(
        "relu", "hidden activation of mlp and conv: relu | leaky_relu | elu | softplus | tanh | "
        "sigmoid (conv_bn always uses relu + batch norm)")
    hidden_dims: tuple[int, ...] = _field((500, 500), "mlp hidden widths (784-500-500-z)")
    channels: tuple[int, ...] | None = _field(
        None, "conv / conv_bn widths per stride-2 stage; default 32 32 64 64 (conv), "
        "32 64 128 256 512 (conv_bn)")


@dataclass
class DataConfig:
    dataset: str = _field("mnist", "dataset name: " + " | ".join(DATASETS))
    data_root: str | None = _field(
        None, "folder holding the datasets (torchvision layout); default $VAE_DATA_ROOT, "
        "else ./data")
    image_size: int | None = _field(
        None, "square image side in px; default the dataset's own (resized once at load)")
    pixel_range: str = _field(
        "unit", "pixel scale inside the model: unit = [0, 1] (sigmoid decoder), signed = "
        "[-1, 1] (tanh decoder, as the CelebA seeds)")
    val_fraction: float = _field(0.1, "share of the training split held out for val_* metrics")
    limit: int | None = _field(None, "use at most N images per split (quick runs, tests)")
    download: bool = _field(False, "let torchvision download a dataset that is missing")


@dataclass
class TrainConfig:
    epochs: int = _field(10, "passes over the training split")
    batch_size: int = _field(128, "images per optimiser step")
    lr: float = _field(1e-3, "Adam learning rate")
    kl_weight: float = _field(
        1.0, "beta: loss = -log p(x|z) + beta * KL(q(z|x) || N(0, I)), both summed over "
        "dimensions, averaged over images; 1 is the plain ELBO")
    grad_clip: float | None = _field(
        1000.0, "max global gradient norm, or null for none (losses are sums over pixels)")
    seed: int = _field(0, "seeds weights, shuffling and noise: same seed, same numbers on CPU")
    device: str = _field("auto", "auto (cuda if present, else cpu) | cpu | cuda | cuda:N")
    amp: bool = _field(True, "bf16 autocast on GPU (ignored on CPU)")
    iwae_samples: int = _field(
        64, "k, importance samples per image for the final test_iwae_nll")


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def channels(self) -> int:
        return DATASETS[self.data.dataset][0]

    @property
    def image_size(self) -> int:
        return self.data.image_size or DATASETS[self.data.dataset][1]

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None = None) -> Config:
        """Build from nested ({"model": {...}}) and/or flat ({"latent_dim": 8}) keys."""
        sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in (values or {}).items():
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"{key}: expected a mapping of fields, got {value!r}")
                for sub_key, sub_value in value.items():
                    _section_of(sub_key, only=key)  # unknown fields fail here, by name
                    sections[key][sub_key] = sub_value
            else:
                sections[_section_of(key)][key] = value
        built = {
            name: SECTIONS[name](**{k: _coerce(SECTIONS[name], k, v) for k, v in kw.items()})
            for name, kw in sections.items()
        }
        return cls(**built)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (lists, not tuples) that from_dict reads back to an equal Config."""
        return {
            name: {k: list(v) if isinstance(v, tuple) else v for k, v in vars(part).items()}
            for name, part in (("model", self.model), ("data", self.data), ("train", self.train))
        }

    def flat(self) -> dict[str, Any]:
        """One level, `section.field` keys: what a tracker logs as params."""
        return {f"{s}.{k}": v for s, part in self.to_dict().items() for k, v in part.items()}

    def replace(self, **changes: Any) -> Config:
        """A copy with flat field changes, validated again."""
        merged = self.to_dict()
        for key, value in changes.items():
            merged[_section_of(key)][key] = value
        return Config.from_dict(merged)


def field_names(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(SECTIONS[section])]


def _section_of(key: str, only: str | None = None) -> str:
    for name in [only] if only else SECTIONS:
        if key in field_names(name):
            return name
    allowed = field_names(only) if only else [f for s in SECTIONS for f in field_names(s)]
    where = f"in section '{only}'" if only else "in the config"
    raise ConfigError(f"{key}: unknown field {where}; known fields: {', '.join(allowed)}")


def _coerce(section: type, key: str, value: Any) -> Any:
    """Lists from YAML/JSON become tuples; numeric strings become floats in float fields.

    The latter because YAML 1.1 reads `lr: 1e-3` (no dot) as the string "1e-3".
    """
    if isinstance(value, list):
        return tuple(value)
    annotation = {f.name: f.type for f in dataclasses.fields(section)}[key]
    if str(annotation).startswith("float") and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value  # validate() names the field and what it accepts
    return value


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: got {value!r}; {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate(config: Config) -> None:
    """Raise ConfigError naming the first field whose value cannot work."""
    m, d, t = config.model, config.data, config.train
    _check(m.arch in ARCHITECTURES, "model.arch", m.arch, f"expected one of {list(ARCHITECTURES)}")
    _check(_is_int(m.latent_dim) and m.latent_dim >= 1, "model.latent_dim", m.latent_dim,
           "expected an integer >= 1")
    _check(m.likelihood in LIKELIHOODS, "model.likelihood", m.likelihood,
           f"expected one of {list(LIKELIHOODS)}")
    _check(_is_number(m.sigma_x) and m.sigma_x > 0, "model.sigma_x", m.sigma_x,
           "expected a number > 0 (decoder noise std on the [0, 1] pixel scale)")
    _check(m.activation in ACTIVATIONS, "model.activation", m.activation,
           f"expected one of {list(ACTIVATIONS)}")
    for name, widths in (("model.hidden_dims", m.hidden_dims), ("model.channels", m.channels)):
        if widths is not None:
            _check(isinstance(widths, tuple) and len(widths) > 0
                   and all(_is_int(w) and w >= 1 for w in widths),
                   name, widths, "expected a non-empty list of integers >= 1")

    _check(d.dataset in DATASETS, "data.dataset", d.dataset, f"expected one of {list(DATASETS)}")
    _check(d.pixel_range in PIXEL_RANGES, "data.pixel_range", d.pixel_range,
           f"expected one of {list(PIXEL_RANGES)}")
    _check(not (m.likelihood == "bernoulli" and d.pixel_range != "unit"), "data.pixel_range",
           d.pixel_range, "the bernoulli likelihood models pixels in [0, 1]: use 'unit'")
    _check(d.image_size is None or (_is_int(d.image_size) and d.image_size >= 1),
           "data.image_size", d.image_size, "expected an integer >= 1 or null (native size)")
    _check(_is_number(d.val_fraction) and 0 < d.val_fraction < 1, "data.val_fraction",
           d.val_fraction, "expected a number strictly between 0 and 1")
    _check(d.limit is None or (_is_int(d.limit) and d.limit >= 2), "data.limit", d.limit,
           "expected an integer >= 2 or null (all images)")
    size_problem = image_size_error(m.arch, config.image_size, m.channels)
    _check(size_problem is None, "data.image_size", config.image_size, size_problem or "")

    _check(_is_int(t.epochs) and t.epochs >= 1, "train.epochs", t.epochs, "expected an integer >= 1")
    _check(_is_int(t.batch_size) and t.batch_size >= 1, "train.batch_size", t.batch_size,
           "expected an integer >= 1")
    _check(_is_number(t.lr) and t.lr > 0, "train.lr", t.lr, "expected a number > 0")
    _check(_is_number(t.kl_weight) and t.kl_weight >= 0, "train.kl_weight", t.kl_weight,
           "expected a number >= 0 (beta; 1 is the plain ELBO)")
    _check(t.grad_clip is None or (_is_number(t.grad_clip) and t.grad_clip > 0), "train.grad_clip",
           t.grad_clip, "expected a number > 0 or null (no clipping)")
    _check(_is_int(t.seed), "train.seed", t.seed, "expected an integer")
    _check(t.device in ("auto", "cpu", "cuda") or str(t.device).startswith("cuda:"),
           "train.device", t.device, "expected auto, cpu, cuda or cuda:N")
    _check(isinstance(t.amp, bool), "train.amp", t.amp, "expected true or false")
    _check(_is_int(t.iwae_samples) and t.iwae_samples >= 1, "train.iwae_samples", t.iwae_samples,
           "expected an integer >= 1")
