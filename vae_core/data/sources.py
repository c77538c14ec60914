"""Where images come from, before they are decoded once into Arrow (vae_core.data.arrow).

Each dataset becomes a `Plan`: the rows in their final order (train rows first, in a fixed
shuffled order, so a validation share can be cut from their end without copying; then the
official val split where there is one; then test), their labels or factors, a checksum of the
source list, and a `decode(start, stop)` that yields the uint8 images of a range of rows.

- mnist, fashion_mnist: torchvision's files under the data root (<root>/MNIST/raw/...).
- celeba: img_align_celeba JPEGs, split by list_eval_partition.txt when present, else by a
  hash of the file name (10% test). Cropped and resized like the seeds (see `crop_box`).
- image_folder: every JPEG/PNG/WebP below a folder; first-level sub-folders become labels.
- shapes: generated (vae_core.data.shapes), nothing read.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vae_core.data import shapes

DATA_ROOT_ENV = "VAE_DATA_ROOT"
ROW_ORDER_SEED = 1234  # fixed: the val share cut from the train rows never moves with a seed
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
CELEBA_SPLITS = {"0": "train", "1": "val", "2": "test"}  # list_eval_partition.txt codes
TEST_SHARE = 0.1  # of a folder without an official split, chosen by file-name hash

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


# (images (k, C, S, S) uint8, failures [(row, reason)]): rows that failed are absent.
Decoded = tuple[np.ndarray, list[tuple[int, str]]]


@dataclass
class Plan:
    """Everything `prepare` needs to write one dataset, rows in their final order."""

    dataset: str
    source: str  # where the images came from, for the metadata
    channels: int
    size: int
    splits: list[str]  # per row: train | val | test
    decode: Callable[[int, int], Decoded]
    labels: np.ndarray | None = None  # (N,) int64
    label_names: list[str] | None = None
    factors: dict[str, np.ndarray] | None = None  # name -> (N,)
    files: list[str] | None = None  # per row, relative to the source folder
    checksum: str = ""  # sha256 of the source list (names and sizes), or of the recipe
    options: dict[str, object] = field(default_factory=dict)  # crop, colour, ...

    def __len__(self) -> int:
        return len(self.splits)


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """--data-root, else $VAE_DATA_ROOT, else ./data; made absolute (Tune moves the cwd)."""
    root = data_root or os.environ.get(DATA_ROOT_ENV) or "data"
    return Path(root).expanduser().resolve()


def _sha256(lines: Iterator[str]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def _name_hash(name: str) -> float:
    """A stable number in [0, 1) from a file name: splits that survive added files."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") / 2**64


def _train_first(splits: list[str]) -> np.ndarray:
    """Row order: train rows in a fixed shuffled order, then val, then test."""
    rng = np.random.default_rng(ROW_ORDER_SEED)
    order = []
    for name in ("train", "val", "test"):
        rows = np.flatnonzero(np.asarray(splits) == name)
        order.append(rng.permutation(rows) if name == "train" else rows)
    return np.concatenate(order)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, C, h, w) -> uint8 (N, C, size, size), antialiased bilinear."""
    if images.shape[-2:] == (size, size):
        return images
    x = torch.from_numpy(images).float()
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


def _array_decoder(images: np.ndarray, size: int, channels: int) -> Callable[[int, int], Decoded]:
    def decode(start: int, stop: int) -> Decoded:
        part = resize_images(images[start:stop], size)
        if part.shape[1] != channels:  # gray -> rgb by repetition, rgb -> gray by luma
            part = np.repeat(part, 3, axis=1) if channels == 3 else _luma(part)
        return part, []

    return decode


def _luma(rgb: np.ndarray) -> np.ndarray:
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[None, :, None, None]
    return (rgb.astype(np.float32) * weights).sum(1, keepdims=True).round().astype(np.uint8)


# ----------------------------------------------------------------------------- torchvision


def check_torchvision_files(name: str, root: Path) -> None:
    folder = root / TORCHVISION_DATASETS[name] / "raw"
    missing = [f for f in IDX_FILES if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"dataset '{name}' not found: expected the uncompressed files {', '.join(missing)} "
            f"in {folder} (torchvision layout: <data-root>/{TORCHVISION_DATASETS[name]}/raw/). "
            f"Point --data-root (or ${DATA_ROOT_ENV}) at the folder that holds "
            f"{TORCHVISION_DATASETS[name]}/, or pass --download to fetch it there."
        )


def plan_torchvision(
    name: str, root: Path, size: int, channels: int, download: bool, limit: int | None = None
) -> Plan:
    import torchvision.datasets  # a second to import; only this reader needs it

    if not download:
        check_torchvision_files(name, root)
    cls = getattr(torchvision.datasets, TORCHVISION_DATASETS[name])
    parts = {}
    for split, train in (("train", True), ("test", False)):
        ds = cls(root=str(root), train=train, download=download)
        images, labels = ds.data.numpy()[:limit], ds.targets.numpy()[:limit]
        parts[split] = (images[:, None], labels)  # (N, 1, 28, 28)
    splits = ["train"] * len(parts["train"][1]) + ["test"] * len(parts["test"][1])
    order = _train_first(splits)
    images = np.concatenate([parts["train"][0], parts["test"][0]])[order]
    labels = np.concatenate([parts["train"][1], parts["test"][1]]).astype(np.int64)[order]
    raw = root / TORCHVISION_DATASETS[name] / "raw"
    checksum = _sha256(f"{f} {(raw / f).stat().st_size}" for f in IDX_FILES)
    return Plan(
        dataset=name,
        source=str(raw),
        channels=channels,
        size=size,
        splits=[splits[i] for i in order],
        decode=_array_decoder(images, size, channels),
        labels=labels,
        label_names=list(cls.classes),
        checksum=checksum,
    )


# ----------------------------------------------------------------------------- shapes


def plan_shapes(size: int, channels: int, limit: int | None = None) -> Plan:
    counts = {s: min(n, limit) if limit else n for s, n in shapes.COUNTS.items()}
    factors = {s: shapes.sample_factors(n, shapes.SEEDS[s]) for s, n in counts.items()}
    splits = ["train"] * counts["train"] + ["test"] * counts["test"]
    merged = {
        k: np.concatenate([factors["train"][k], factors["test"][k]]) for k in shapes.FACTOR_NAMES
    }

    def decode(start: int, stop: int) -> Decoded:
        part = shapes.render({k: v[start:stop] for k, v in merged.items()}, size)
        return (part if channels == 3 else _luma(part)), []

    recipe = f"shapes v1 size={size} counts={counts} seeds={shapes.SEEDS}"
    return Plan(
        dataset="shapes",
        source="generated",
        channels=channels,
        size=size,
        splits=splits,
        decode=decode,
        labels=merged["shape"].astype(np.int64),
        label_names=list(shapes.SHAPE_NAMES),
        factors=merged,
        checksum=_sha256(iter([recipe])),
    )


# ----------------------------------------------------------------------------- image files


def crop_box(width: int, height: int, crop: str) -> tuple[float, float, float, float]:
    """The (left, top, right, bottom) region of an image that is resized to the output.

    center: the largest centred square (min side), then resize: the PyTorch CelebA notebook's
        64 px and the TF model's 128 px images. Relative to the image, so a downscaled copy
        of CelebA gives the same framing.
    tight: the TF model's optional face crop, a centred square of 108 px on the 178 px wide
        aligned images, i.e. 108/178 of the width.
    none: the whole image, squashed to a square (what transforms.Resize((64, 64)) does).
    """
    if crop == "none":
        return 0.0, 0.0, float(width), float(height)
    side = min(width, height) if crop == "center" else width * 108 / 178
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def decode_image(path: Path, size: int, channels: int, crop: str) -> np.ndarray:
    """One image file -> uint8 (C, size, size). Grayscale, RGBA (alpha dropped), CMYK and
    palette images are converted to the dataset's colour mode."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            box = crop_box(im.width, im.height, crop)
            im = im.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
            array = np.asarray(im, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _file_decoder(
    root: Path, files: list[str], size: int, channels: int, crop: str, workers: int
) -> Callable[[int, int], Decoded]:
    def one(row: int) -> tuple[int, np.ndarray | None, str]:
        try:
            return row, decode_image(root / files[row], size, channels, crop), ""
        except Exception as err:  # noqa: BLE001 - any unreadable file is reported, not fatal
            return row, None, f"{type(err).__name__}: {err}"

    def decode(start: int, stop: int) -> Decoded:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL releases the GIL
            results = list(pool.map(one, range(start, stop)))
        good = [image for _, image, _ in results if image is not None]
        failures = [(row, reason) for row, image, reason in results if image is None]
        empty = np.empty((0, channels, size, size), dtype=np.uint8)
        return (np.stack(good) if good else empty), failures

    return decode


def list_images(folder: Path) -> list[str]:
    """Image files below `folder`, recursively, as sorted relative POSIX paths."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath).relative_to(folder)
        found += [
            (base / f).as_posix()
            for f in filenames
            if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith(".")
        ]
    return sorted(found)


def _file_checksum(folder: Path, files: list[str]) -> str:
    return _sha256(f"{f} {(folder / f).stat().st_size}" for f in files)


def find_celeba(root: Path) -> tuple[Path, Path | None]:
    """(image folder, partition file or None) in the layouts people keep CelebA in:
    <root>/celeba/img_align_celeba (torchvision's), <root>/img_align_celeba, or <root>."""
    for folder in (root / "celeba" / "img_align_celeba", root / "img_align_celeba", root):
        if folder.is_dir() and any(
            Path(n).suffix.lower() in (".jpg", ".jpeg", ".png") for n in os.listdir(folder)
        ):
            for candidate in (
                folder.parent / "list_eval_partition.txt",
                folder / "list_eval_partition.txt",
                folder.parent / "Eval" / "list_eval_partition.txt",
            ):
                if candidate.is_file():
                    return folder, candidate
            return folder, None
    raise DatasetNotFoundError(
        f"dataset 'celeba' not found under {root}: expected the aligned JPEGs in "
        f"{root / 'celeba' / 'img_align_celeba'} (torchvision's layout), "
        f"{root / 'img_align_celeba'} or {root} itself, with list_eval_partition.txt beside "
        "the image folder for the official split. CelebA cannot be downloaded automatically: "
        "fetch img_align_celeba.zip from the CelebA site and unpack it there."
    )


def _read_partition(path: Path, files: list[str]) -> dict[str, str]:
    """file name -> split from list_eval_partition.txt ("000001.jpg 0" per line)."""
    split_of = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in CELEBA_SPLITS:
            raise ValueError(f"{path}:{number}: expected '<file> <0|1|2>', got {line!r}")
        split_of[parts[0]] = CELEBA_SPLITS[parts[1]]
    missing = [f for f in files if Path(f).name not in split_of]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} image(s) have no partition entry, e.g. "
            f"{missing[0]}; remove the file to split by file name instead"
        )
    return split_of


def require_folder(dataset: str, folder: Path) -> None:
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{dataset}: {folder} is not a folder")


def plan_folder(
    dataset: str,
    folder: Path,
    size: int,
    channels: int,
    crop: str,
    partition: Path | None = None,
    limit: int | None = None,
    workers: int | None = None,
) -> Plan:
    """A plan over image files: celeba (partition file) or image_folder (labels from
    first-level sub-folders when every image is in one)."""
    require_folder(dataset, folder)
    files = list_images(folder)
    if not files:
        raise DatasetNotFoundError(
            f"{dataset}: no image files (.jpg, .jpeg, .png, .webp) found in {folder} or below"
        )
    if partition is not None:
        split_of = _read_partition(partition, files)
        splits = [split_of[Path(f).name] for f in files]
    else:
        splits = ["test" if _name_hash(Path(f).name) < TEST_SHARE else "train" for f in files]
    if limit is not None:  # the first `limit` of each split, by file name
        taken, keep = dict.fromkeys(CELEBA_SPLITS.values(), 0), []
        for row, split in enumerate(splits):
            if taken[split] < limit:
                taken[split] += 1
                keep.append(row)
        files, splits = [files[i] for i in keep], [splits[i] for i in keep]
    order = _train_first(splits)
    files, splits = [files[i] for i in order], [splits[i] for i in order]
    labels = label_names = None
    if dataset == "image_folder" and all("/" in f for f in files):
        label_names = sorted({f.split("/", 1)[0] for f in files})
        index = {name: i for i, name in enumerate(label_names)}
        labels = np.array([index[f.split("/", 1)[0]] for f in files], dtype=np.int64)
    decode = _file_decoder(folder, files, size, channels, crop, workers or os.cpu_count() or 1)
    source = str(folder) + (
        f" (split by {partition.name})" if partition else " (split by file-name hash)"
    )
    return Plan(
        dataset=dataset,
        source=source,
        channels=channels,
        size=size,
        splits=splits,
        decode=decode,
        labels=labels,
        label_names=label_names,
        files=files,
        checksum=_file_checksum(folder, files),
        options={"crop": crop},
    )
