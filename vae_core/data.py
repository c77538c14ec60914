"""Image datasets as uint8 tensors, split into train / val / test.

Images stay uint8 (N, C, H, W) in memory and are turned into float on the training device one
batch at a time (vae_core.likelihoods.PixelCoding), so there is no per-item Python work. The
validation split is carved from the training split by a fixed permutation that does not depend
on the training seed: every trial of a sweep is scored on the same images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vae_core.config import Config

DATA_ROOT_ENV = "VAE_DATA_ROOT"
VAL_SPLIT_SEED = 1234  # fixed on purpose: the val split must not move with train.seed

# dataset name -> torchvision class name (also its folder under the data root)
TORCHVISION_DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where they must be; the message says where and how."""


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None  # (N,) int64, or None for unlabelled data

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """--data-root, else $VAE_DATA_ROOT, else ./data; made absolute (Tune moves the cwd)."""
    root = data_root or os.environ.get(DATA_ROOT_ENV) or "data"
    return Path(root).expanduser().resolve()


def _check_torchvision_files(name: str, root: Path) -> None:
    folder = root / TORCHVISION_DATASETS[name] / "raw"
    missing = [f for f in IDX_FILES if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"dataset '{name}' not found: expected the uncompressed files {', '.join(missing)} "
            f"in {folder} (torchvision layout: <data-root>/{TORCHVISION_DATASETS[name]}/raw/). "
            f"Point --data-root (or ${DATA_ROOT_ENV}) at the folder that holds "
            f"{TORCHVISION_DATASETS[name]}/, or pass --download to fetch it there."
        )


def _load_torchvision(name: str, root: Path, download: bool) -> tuple[Split, Split]:
    import torchvision.datasets  # imported here: it takes a second and only this reader needs it

    if not download:
        _check_torchvision_files(name, root)
    cls = getattr(torchvision.datasets, TORCHVISION_DATASETS[name])
    parts = []
    for train in (True, False):
        ds = cls(root=str(root), train=train, download=download)
        parts.append(Split(ds.data.unsqueeze(1).contiguous(), ds.targets.long()))  # (N,1,28,28)
    return parts[0], parts[1]


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, h, w) -> uint8 (N, C, size, size), antialiased bilinear, done once."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = [
        F.interpolate(
            images[s].float(),
            size=(size, size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        for s in (slice(i, i + 4096) for i in range(0, len(images), 4096))
    ]
    return torch.cat(out).round().clamp(0, 255).to(torch.uint8)


def _take(split: Split, index: torch.Tensor | slice) -> Split:
    return Split(split.images[index], None if split.labels is None else split.labels[index])


def split_train_val(train: Split, val_fraction: float) -> tuple[Split, Split]:
    """Hold out a fixed, seed-independent share of the training split for validation."""
    n_val = max(1, round(len(train) * val_fraction))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    return _take(train, order[n_val:]), _take(train, order[:n_val])


def load_splits(config: Config) -> Splits:
    """Read the configured dataset into uint8 train / val / test splits."""
    d = config.data
    root = resolve_data_root(d.data_root)
    train, test = _load_torchvision(d.dataset, root, d.download)
    if d.limit is not None:
        train, test = _take(train, slice(0, d.limit)), _take(test, slice(0, d.limit))
    train, val = split_train_val(train, d.val_fraction)
    parts = [Split(resize(s.images, config.image_size), s.labels) for s in (train, val, test)]
    return Splits(*parts)


def shuffled_batches(
    n: int,
    batch_size: int,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """Index batches of one epoch over n items, reshuffled by `generator`.

    Keeps the last, smaller batch (dropping it would silently skip images on small data) but
    folds a single leftover image into the batch before: batch norm cannot train on one.
    """
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches
