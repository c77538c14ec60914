"""Data that stands in for what these machines lack: a CelebA-like folder of JPEGs.

Used by the tests and by benchmarks/data_pipeline.py. The images are 178x218 like
img_align_celeba: a soft background gradient and a coloured ellipse ("a face") whose place and
size vary, so crops and resizes have something to show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CELEBA_SIZE = (178, 218)  # width, height of img_align_celeba


def celeba_like_image(index: int, size: tuple[int, int] = CELEBA_SIZE) -> Image.Image:
    rng = np.random.default_rng(index)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    background = rng.uniform(40, 200, 3)[:, None, None] * (0.6 + 0.4 * y / height)
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
    rx, ry = width * rng.uniform(0.2, 0.35), height * rng.uniform(0.2, 0.35)
    face = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
    pixels = np.where(face, rng.uniform(100, 255, 3)[:, None, None], background)
    return Image.fromarray(pixels.transpose(1, 2, 0).clip(0, 255).astype(np.uint8))


def make_celeba_folder(
    root: Path,
    n: int,
    *,
    partition: bool = True,
    corrupt: int = 1,
    grayscale: int = 1,
    size: tuple[int, int] = CELEBA_SIZE,
) -> Path:
    """<root>/celeba/img_align_celeba/000001.jpg ... in torchvision's layout.

    The first `corrupt` files are truncated JPEGs, the next `grayscale` are mode L.
    With `partition`, list_eval_partition.txt splits them like CelebA (~80/10/10).
    Returns the image folder.
    """
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(1, n + 1):
        name = f"{i:06d}.jpg"
        image = celeba_like_image(i, size)
        if corrupt < i <= corrupt + grayscale:
            image = image.convert("L")
        image.save(folder / name, quality=90)
        if i <= corrupt:
            data = (folder / name).read_bytes()
            (folder / name).write_bytes(data[: len(data) // 3])
        lines.append(f"{name} {0 if i % 10 < 8 else (1 if i % 10 == 8 else 2)}")
    if partition:
        (folder.parent / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return folder
