"""Typed run configuration: model, data and training sections, validated at the edge.

A config is built from the plain dict Ray Tune hands over (nested by section, or flat: every
field name is unique across sections), from `vae-train` flags, or from a YAML file. Every
check names the field, the bad value and what would be accepted, and runs before any compute.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vae_core.architectures import ARCHITECTURES, INITS, image_size_error

LIKELIHOODS = ("gaussian", "gaussian_learned", "bernoulli")
MEAN_ACTIVATIONS = ("none", "squash")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "softplus", "tanh", "sigmoid")
PIXEL_RANGES = ("unit", "signed")  # [0, 1] or [-1, 1] inside the model
CROPS = ("center", "tight", "none")  # see vae_core.data.sources.crop_box
COLORS = {"gray": 1, "rgb": 3}

# name -> (channels, default image size). The readers live in vae_core.data.sources.
DATASETS: dict[str, tuple[int, int]] = {
    "mnist": (1, 28),
    "fashion_mnist": (1, 28),
    "celeba": (3, 64),
    "image_folder": (3, 64),
    "shapes": (3, 64),
}


class ConfigError(ValueError):
    """A config field has a value that cannot work; the message says which and what would."""


def _field(default: Any, doc: str) -> Any:
    """A dataclass field whose `doc` becomes the `vae-train --help` text of its flag."""
    return field(default=default, metadata={"doc": doc})


@dataclass
class ModelConfig:
    arch: str = _field("conv", "network family: mlp | conv | conv_bn | keras_conv")
    latent_dim: int = _field(16, "size of the latent code z")
    likelihood: str = _field(
        "gaussian",
        "p(x|z): gaussian (fixed sigma_x) | gaussian_learned (one shared, learned "
        "sigma_x) | bernoulli (binarised pixels)",
    )
    sigma_x: float = _field(
        0.1, "decoder noise std on the [0, 1] pixel scale (the initial value when learned)"
    )
    mean_activation: str = _field(
        "none",
        "Gaussian decoder mean: none (linear; display clamps) or squash (sigmoid for [0, 1], "
        "tanh for [-1, 1], as the seeds). Squashing can saturate on images with large black "
        "areas (shapes) and stop learning",
    )
    activation: str = _field(
        "relu",
        "hidden activation of mlp, conv and keras_conv: relu | leaky_relu | elu | softplus | "
        "tanh | sigmoid (conv_bn always uses relu + batch norm)",
    )
    hidden_dims: tuple[int, ...] = _field((500, 500), "mlp hidden widths (784-500-500-z)")
    widths: tuple[int, ...] | None = _field(
        None,
        "conv / conv_bn / keras_conv widths per stride-2 stage; default 32 32 64 64 (conv), "
        "32 64 128 256 512 (conv_bn), 32 64 (keras_conv)",
    )
    refine: int = _field(
        0,
        "conv_bn only: channels of a full-resolution 3x3 convolution that ends the decoder "
        "(0: none, the TF seed's layout; 16 draws the corners of the shapes quick start)",
    )
    init: str = _field(
        "default",
        "weight initialisation: default (PyTorch's per-layer defaults) | xavier "
        "(Glorot-uniform weights, zero biases: Keras' default, as the Keras conv seed) | "
        "truncated_normal (weights N(0, 0.1^2) cut at 2 sd, biases 0.1, as the TF MNIST seed)",
    )


@dataclass
class DataConfig:
    dataset: str = _field("mnist", "dataset name: " + " | ".join(DATASETS))
    data_root: str | None = _field(
        None,
        "folder holding the dataset (mnist: <root>/MNIST/raw, celeba: <root>/celeba/"
        "img_align_celeba, image_folder: the folder itself); default $VAE_DATA_ROOT, else ./data",
    )
    data_path: str | None = _field(
        None,
        "a file made by `vae-data prepare` (path or s3://, gs://, file:// URI); default: "
        "prepared from data_root into the cache on first use",
    )
    cache_dir: str | None = _field(
        None, "node-local cache of prepared files; default $VAE_CACHE_DIR, else ~/.cache/vae-sweep"
    )
    image_size: int | None = _field(
        None, "square image side in px; default 28 for (fashion_)mnist, 64 otherwise"
    )
    crop: str = _field(
        "center",
        "how photos become squares: center (largest centred square), tight (the "
        "TF CelebA model's 108/178-wide face crop) or none (squash)",
    )
    color: str | None = _field(None, "gray | rgb; default the dataset's own")
    pixel_range: str = _field(
        "unit",
        "pixel scale inside the model: unit = [0, 1] (sigmoid decoder), signed = "
        "[-1, 1] (tanh decoder, as the CelebA seeds)",
    )
    binarize: bool = _field(
        True,
        "bernoulli only: binarise pixels at >= 128, a proper likelihood over {0, 1}; false "
        "feeds [0, 1] grey levels to the cross-entropy, as the Keras conv seed (val_bpd is then "
        "a cross-entropy, not a likelihood)",
    )
    val_fraction: float = _field(0.1, "share of the training split held out for val_* metrics")
    limit: int | None = _field(None, "use at most N images per split (quick runs, tests)")
    download: bool = _field(False, "let torchvision download a dataset that is missing")


@dataclass
class TrainConfig:
    epochs: int = _field(10, "passes over the training split")
    batch_size: int = _field(128, "images per optimiser step")
    lr: float = _field(1e-3, "Adam learning rate")
    kl_weight: float = _field(
        1.0,
        "beta: loss = -log p(x|z) + beta * KL(q(z|x) || N(0, I)), both summed over "
        "dimensions, averaged over images; 1 is the plain ELBO",
    )
    grad_clip: float | None = _field(
        1000.0, "max global gradient norm, or null for none (losses are sums over pixels)"
    )
    seed: int = _field(0, "seeds weights, shuffling and noise: same seed, same numbers on CPU")
    device: str = _field("auto", "auto (cuda if present, else cpu) | cpu | cuda | cuda:N")
    amp: bool = _field(True, "bf16 autocast on GPU (ignored on CPU)")
    iwae_samples: int = _field(64, "k, importance samples per image for the final test_iwae_nll")


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
        return COLORS[self.data.color] if self.data.color else DATASETS[self.data.dataset][0]

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


Rule = tuple[Callable[[Any], bool], str]  # (accepts(value), what would be accepted)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _one_of(choices: Any) -> Rule:
    return lambda v: v in choices, f"expected one of {list(choices)}"


def _int_at_least(low: int, or_none: bool = False) -> Rule:
    allowed = f"expected an integer >= {low}" + (" or null" if or_none else "")
    return lambda v: (or_none and v is None) or (_is_int(v) and v >= low), allowed


def _positive(or_none: bool = False, note: str = "") -> Rule:
    allowed = "expected a number > 0" + (" or null" if or_none else "") + note
    return lambda v: (or_none and v is None) or (_is_number(v) and v > 0), allowed


def _widths(v: Any) -> bool:
    return v is None or (isinstance(v, tuple) and v and all(_is_int(w) and w >= 1 for w in v))


# "section.field" -> (accepts(value), what would be accepted); checked in this order.
RULES: dict[str, Rule] = {
    "model.arch": _one_of(ARCHITECTURES),
    "model.latent_dim": _int_at_least(1),
    "model.likelihood": _one_of(LIKELIHOODS),
    "model.sigma_x": _positive(note=" (decoder noise std on the [0, 1] pixel scale)"),
    "model.mean_activation": _one_of(MEAN_ACTIVATIONS),
    "model.activation": _one_of(ACTIVATIONS),
    "model.hidden_dims": (_widths, "expected a non-empty list of integers >= 1"),
    "model.widths": (_widths, "expected a non-empty list of integers >= 1, or null"),
    "model.refine": _int_at_least(0),
    "model.init": _one_of(INITS),
    "data.dataset": _one_of(DATASETS),
    "data.pixel_range": _one_of(PIXEL_RANGES),
    "data.binarize": (lambda v: isinstance(v, bool), "expected true or false"),
    "data.image_size": _int_at_least(1, or_none=True),
    "data.crop": _one_of(CROPS),
    "data.color": (lambda v: v is None or v in COLORS, f"expected one of {list(COLORS)} or null"),
    "data.val_fraction": (
        lambda v: _is_number(v) and 0 < v < 1,
        "expected a number strictly between 0 and 1",
    ),
    "data.limit": _int_at_least(2, or_none=True),
    "data.download": (lambda v: isinstance(v, bool), "expected true or false"),
    "train.epochs": _int_at_least(1),
    "train.batch_size": _int_at_least(1),
    "train.lr": _positive(),
    "train.kl_weight": (
        lambda v: _is_number(v) and v >= 0,
        "expected a number >= 0 (beta; 1 is the plain ELBO)",
    ),
    "train.grad_clip": _positive(or_none=True),
    "train.seed": (_is_int, "expected an integer"),
    "train.device": (
        lambda v: v in ("auto", "cpu", "cuda") or str(v).startswith("cuda:"),
        "expected auto, cpu, cuda or cuda:N",
    ),
    "train.amp": (lambda v: isinstance(v, bool), "expected true or false"),
    "train.iwae_samples": _int_at_least(1),
}


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{name}: got {value!r}; {allowed}")


def validate(config: Config) -> None:
    """Raise ConfigError naming the first field whose value cannot work."""
    for name, (accepts, allowed) in RULES.items():
        section, key = name.split(".")
        value = getattr(getattr(config, section), key)
        if not accepts(value):
            _fail(name, value, allowed)
    # Rules that involve two fields.
    if config.model.likelihood == "bernoulli" and config.data.pixel_range != "unit":
        _fail(
            "data.pixel_range",
            config.data.pixel_range,
            "the bernoulli likelihood models pixels in [0, 1]: use 'unit'",
        )
    if config.model.refine and config.model.arch != "conv_bn":
        _fail(
            "model.refine",
            config.model.refine,
            f"only the conv_bn decoder has a refine layer (arch is {config.model.arch!r}): use 0",
        )
    problem = image_size_error(config.model.arch, config.image_size, config.model.widths)
    if problem is not None:
        _fail("data.image_size", config.image_size, problem)
