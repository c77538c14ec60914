"""Which models may be compared: bits per dimension rank two models only over the same data.

A model's comparability key is what its val_bpd is a number of: the dataset, image size,
channels and crop (the pixels), the data limit and validation share (the split), and the
likelihood family, since a Bernoulli decoder's bits are over binarised pixels (about 0.17 bpd on
MNIST) and a Gaussian's over dequantised 8-bit ones (about 6.8). The pixel range is not part of
it: the bound is put on the 8-bit scale either way (vae_core.likelihoods.PixelCoding), so
[0, 1] and [-1, 1] models compare.

The trials of one sweep share one key (a space that mixes keys is refused), a registered model
holds one key, and its default name says which: `<dataset>-vae` for the dataset's defaults
(`celeba-vae`: 64 px, centre crop, Gaussian), else what differs (`celeba128-tight-vae`,
`mnist-binary-vae`, `shapes32-vae`); a smoke test's name ends in `-smoke`, so it never touches
a real one.
"""

from __future__ import annotations

import itertools
from typing import Any

from sweeps.space import corners, describe
from vae_core import Config, ConfigError
from vae_core.config import DATASETS, DataConfig

# Config fields that change the key: a search space may not vary them.
KEY_FIELDS = (
    "dataset",
    "image_size",
    "color",
    "crop",
    "limit",
    "val_fraction",
    "likelihood",
    "binarize",
)
FAMILIES = {
    "continuous": "dequantised 8-bit pixels (Gaussian decoders)",
    "binary": "binarised pixels (Bernoulli decoder)",
    "grey-xent": "grey levels under a cross-entropy (Bernoulli with binarize=false)",
}
SMOKE_SUFFIX = "-smoke"


def family(config: Config) -> str:
    if config.model.likelihood != "bernoulli":
        return "continuous"
    return "binary" if config.data.binarize else "grey-xent"


def key(config: Config) -> str:
    """`shapes/64px/3ch/center/all/val0.1/continuous`: what the model's val_bpd is over."""
    d = config.data
    limit = f"limit{d.limit}" if d.limit else "all"
    return "/".join(
        [
            d.dataset,
            f"{config.image_size}px",
            f"{config.channels}ch",
            d.crop,
            limit,
            f"val{d.val_fraction:g}",
            family(config),
        ]
    )


def default_name(config: Config) -> str:
    """The registered model a key goes to: `<dataset>-vae` for the dataset's defaults (its
    own size and colour, centre crop, all the data, continuous), else what differs, in order:
    size, colour, crop, family, limit, validation share (`celeba128-tight-vae`,
    `mnist-binary-limit1000-vae`, `shapes32-vae`)."""
    d, defaults = config.data, DataConfig()
    size = config.image_size if config.image_size != DATASETS[d.dataset][1] else ""
    parts = [f"{d.dataset.replace('_', '-')}{size}"]
    if config.channels != DATASETS[d.dataset][0]:
        parts.append(d.color)
    if d.crop != defaults.crop:
        parts.append(d.crop)
    if family(config) != "continuous":
        parts.append(family(config))
    if d.limit:
        parts.append(f"limit{d.limit}")
    if d.val_fraction != defaults.val_fraction:
        parts.append(f"val{d.val_fraction:g}")
    return "-".join([*parts, "vae"])


def registry_name(config: Config, given: str | None, smoke_test: bool) -> str:
    """--registry-name or the key's default name; `-smoke` appended for a smoke test."""
    # A smoke test's own data limit is implied by `-smoke`.
    name = given or default_name(config.replace(limit=None) if smoke_test else config)
    return f"{name}{SMOKE_SUFFIX}" if smoke_test and not name.endswith(SMOKE_SUFFIX) else name


def check_one_key(space: dict[str, Any], base: Config) -> None:
    """Every trial of a sweep is ranked on val_bpd against every other: refuse a space whose
    trials would be over different data, naming the field."""
    varied = {f: corners(f, space[f]) for f in KEY_FIELDS if f in space}
    if not varied:
        return
    seen: dict[str, dict[str, Any]] = {}
    for values in itertools.product(*varied.values()):
        choice = dict(zip(varied, values, strict=True))
        try:
            seen.setdefault(key(base.replace(**choice)), choice)
        except ConfigError:
            continue  # a combination check_space refuses on its own
    if len(seen) < 2:
        return
    (a, first), (b, second) = list(seen.items())[:2]
    field = next(f for f in varied if first[f] != second[f])
    if field in ("likelihood", "binarize"):
        families = sorted({k.rsplit("/", 1)[1] for k in seen})
        why = "; ".join(f"{f}: {FAMILIES[f]}" for f in families)
        raise ConfigError(
            f"search space '{field}': {describe(space[field])} mixes likelihood families whose "
            f"bits per dimension are over different data ({why}), so val_bpd would pick one "
            "family by construction; sweep one family per sweep"
        )
    raise ConfigError(
        f"search space '{field}': {describe(space[field])} gives trials over different data "
        f"({a} and {b}), whose val_bpd do not compare; set {field} in the base config and "
        "sweep each value separately"
    )
