"""Image datasets as uint8 tensors, split into train / val / test, shared by all trials.

A dataset is decoded once into an Arrow file (vae_core.data.arrow), memory-mapped by every
trial on the node (vae_core.data.cache), and handed to the trainer as zero-copy uint8 views,
turned into float on the training device one batch at a time. The validation split is the
file's own (CelebA's official one) or a fixed share cut from the end of the training rows,
which the file stores in a fixed shuffled order: every trial is scored on the same images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vae_core.config import COLORS, Config, ConfigError
from vae_core.data.arrow import DataFileError, Prepared, open_prepared
from vae_core.data.sources import DatasetNotFoundError, resolve_data_root

__all__ = [
    "DataFileError",
    "DatasetNotFoundError",
    "Split",
    "Splits",
    "load_splits",
    "resolve_data_root",
    "shuffled_batches",
]


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) uint8; a read-only view when memory-mapped
    labels: torch.Tensor | None  # (N,) int64, or None for unlabelled data
    factors: dict[str, torch.Tensor] | None = None  # generative factors (shapes), (N,) each

    def __len__(self) -> int:
        return len(self.images)

    def take(self, index: slice) -> Split:
        factors = None if self.factors is None else {k: v[index] for k, v in self.factors.items()}
        labels = None if self.labels is None else self.labels[index]
        return Split(self.images[index], labels, factors)


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split


def _split(
    prepared: Prepared, images: torch.Tensor, labels: torch.Tensor | None, start: int, stop: int
) -> Split:
    factors = {
        name: torch.from_numpy(prepared.column(name)[start:stop])
        for name in prepared.meta["factors"]
    } or None
    return Split(images[start:stop], None if labels is None else labels[start:stop], factors)


# What a prepared file must match: its metadata key -> (config field, vae-train flag)
MATCHED = {
    "dataset": ("dataset", "--dataset"),
    "size": ("image_size", "--image-size"),
    "channels": ("color", "--color"),
}


def check_file(prepared: Prepared, config: Config) -> None:
    """A prepared file given as data.data_path holds the data the config asks for, else a
    ConfigError naming the file, what it holds, what the config asks and both ways out (the
    same file for vae-train and for a sweep, which refuses it before any trial starts)."""
    meta, d = prepared.meta, config.data
    wanted = {"dataset": d.dataset, "size": config.image_size, "channels": config.channels}
    for key, (field, flag) in MATCHED.items():
        if meta[key] == wanted[key]:
            continue
        value = {v: k for k, v in COLORS.items()}[meta[key]] if key == "channels" else meta[key]
        prepare = f"vae-data prepare {d.dataset} --size {config.image_size}"
        prepare += f" --color {d.color}" if d.color else ""
        prepare += f" --crop {d.crop}" if d.crop != "center" else ""
        prepare += f" --limit {d.limit}" if d.limit else ""
        raise ConfigError(
            f"data.data_path: {prepared.path} holds {key} {meta[key]!r}, the config asks for "
            f"{wanted[key]!r}; pass {flag} {value} (a sweep: --set {field}={value}) or prepare "
            f"the file for this config ({prepare} --out FILE). The file holds {meta['count']} "
            f"{meta['dataset']} images of {meta['channels']}x{meta['size']}x{meta['size']}"
        )


def splits_from_file(prepared: Prepared, config: Config) -> Splits:
    """train / val / test views of a prepared file, checked against the config."""
    check_file(prepared, config)
    d = config.data
    images = prepared.images
    labels = prepared.table.column("label")
    labels = torch.from_numpy(labels.to_numpy()) if labels.null_count == 0 else None
    parts = {
        name: _split(prepared, images, labels, *rng)
        for name in ("train", "val", "test")
        if (rng := prepared.split_range(name)) is not None
    }
    if "train" not in parts or "test" not in parts:
        raise DataFileError(f"{prepared.path}: needs train and test rows, has {sorted(parts)}")
    train = parts["train"].take(slice(0, d.limit))
    if "val" in parts:
        val = parts["val"].take(slice(0, d.limit))
    else:  # the train rows are stored shuffled: their tail is a random, fixed share
        n_val = max(1, round(len(train) * d.val_fraction))
        if n_val >= len(train):
            raise DataFileError(
                f"{prepared.path}: {len(train)} training rows are too few to "
                f"hold out data.val_fraction={d.val_fraction}"
            )
        train, val = train.take(slice(0, len(train) - n_val)), train.take(slice(-n_val, None))
    return Splits(train, val, parts["test"].take(slice(0, d.limit)))


def load_splits(config: Config, progress: bool = True) -> Splits:
    """The configured dataset, prepared into the node cache on first use, memory-mapped."""
    from vae_core.data.cache import prepared_file

    return splits_from_file(open_prepared(prepared_file(config, progress)), config)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches of one epoch over n items, reshuffled by `generator`.

    Keeps the last, smaller batch (dropping it would silently skip images on small data) but
    folds a single leftover image into the batch before: batch norm cannot train on one.
    """
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches
