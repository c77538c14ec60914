"""`shapes`: a built-in dataset of simple shapes, generated procedurally, needing no file.

In the spirit of dSprites (Matthey et al., 2017), with colour: each RGB image shows one shape
(square, circle, triangle or heart) on black, and keeps the generative factors that drew it,
so later work can measure disentanglement:

    shape     int    0..3 (SHAPE_NAMES)
    scale     float  0.5 .. 1.0, the shape's half-width in quarters of the image width
    rotation  float  0 .. 2 pi, radians (the circle looks the same at every angle)
    x, y      float  0.3 .. 0.7, the centre as a fraction of the image width / height
    hue       float  0 .. 1, fully saturated, full value (HSV)

Images are rendered with 2x2 supersampling (antialiased edges) by vectorised tensor maths,
deterministic for a given seed, size and count on every machine.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

SHAPE_NAMES = ("square", "circle", "triangle", "heart")
FACTOR_NAMES = ("shape", "scale", "rotation", "x", "y", "hue")
FACTOR_RANGES = {
    "shape": (0, 3),
    "scale": (0.5, 1.0),
    "rotation": (0.0, 2 * math.pi),
    "x": (0.3, 0.7),
    "y": (0.3, 0.7),
    "hue": (0.0, 1.0),
}
COUNTS = {"train": 20_000, "test": 2_000}  # the default dataset: 22,000 images
SEEDS = {"train": 0, "test": 1}  # the test images are never the training images' twins
SUPERSAMPLE = 2


def sample_factors(n: int, seed: int) -> dict[str, np.ndarray]:
    """n draws of every factor, uniform in its range."""
    g = torch.Generator().manual_seed(seed)

    def uniform(name: str) -> np.ndarray:
        low, high = FACTOR_RANGES[name]
        return (low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)).numpy()

    factors = {"shape": torch.randint(0, len(SHAPE_NAMES), (n,), generator=g).numpy()}
    for name in FACTOR_NAMES[1:]:
        factors[name] = uniform(name).astype(np.float32)
    return factors


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u.abs() <= 0.8) & (v.abs() <= 0.8)


def _circle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u * u + v * v <= 1.0


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Equilateral, circumradius 1, pointing up (v grows upwards)."""
    return (v >= -0.5) & (math.sqrt(3) * u + v <= 1.0) & (-math.sqrt(3) * u + v <= 1.0)


def _heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3, scaled to about [-1, 1]^2."""
    x, y = u * 1.1, v * 1.1 + 0.25
    return (x * x + y * y - 1).pow(3) - x * x * y.pow(3) <= 0


SHAPES = (_square, _circle, _triangle, _heart)  # in SHAPE_NAMES order


def _hsv_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """(B,) hue in [0, 1) at full saturation and value -> (B, 3) RGB in [0, 1]."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + hue[:, None] * 6) % 6
    return 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def render(factors: dict[str, np.ndarray], size: int) -> np.ndarray:
    """uint8 images (N, 3, size, size) for the given factors."""
    n, fine = len(factors["shape"]), size * SUPERSAMPLE
    coords = (torch.arange(fine, dtype=torch.float32) + 0.5) / fine  # pixel centres in (0, 1)
    py, px = torch.meshgrid(coords, coords, indexing="ij")
    px, py = px.flatten()[None], py.flatten()[None]  # (1, P)
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for start in range(0, n, 512):
        part = {k: torch.as_tensor(v[start : start + 512]) for k, v in factors.items()}
        radius = (part["scale"] / 4.0)[:, None]  # (B, 1), fraction of the image
        dx = (px - part["x"][:, None]) / radius
        dy = (part["y"][:, None] - py) / radius  # image rows grow downwards, v upwards
        cos, sin = torch.cos(part["rotation"])[:, None], torch.sin(part["rotation"])[:, None]
        u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # into the shape's own frame
        mask = torch.zeros_like(u)  # (B, P)
        for kind, inside in enumerate(SHAPES):  # each image tests only its own shape
            rows = part["shape"] == kind
            mask[rows] = inside(u[rows], v[rows]).float()
        mask = mask.view(-1, 1, fine, fine)
        coverage = F.avg_pool2d(mask, SUPERSAMPLE)  # (B, 1, size, size), antialiased
        rgb = _hsv_to_rgb(part["hue"].double()).float()[:, :, None, None]  # (B, 3, 1, 1)
        out[start : start + len(radius)] = (coverage * rgb * 255).round().to(torch.uint8).numpy()
    return out


def generate(
    split: str,
    size: int = 64,
    count: int | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(images (N, 3, size, size) uint8, factors) of one split, N = COUNTS[split] by default."""
    factors = sample_factors(count if count is not None else COUNTS[split], SEEDS[split])
    return render(factors, size), factors
