"""The seeds' pictures as PNG files: reconstructions, samples, interpolations, latent scatter,
2-D manifold and nearest training neighbours.

Image grids are tiled here (`tile`); the scatter plot uses matplotlib (Agg, no display).
Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from vae_core.data import Split, Splits
from vae_core.model import VAE

GRID_PADDING = 2
MIN_TILE = 64  # smaller images (MNIST's 28 px) are enlarged, pixel for pixel, to at least this


def _device(model: VAE) -> torch.device:
    return next(model.parameters()).device


def _atomic_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def image_format(path: str | os.PathLike) -> str:
    """The format a grid is written in, from the file's suffix; ValueError naming the ones
    taken. (A .jpg holds JPEG bytes: a viewer trusts the suffix.)"""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"{path}: expected a file ending in {', '.join(FORMATS)} (the picture's format)"
        )
    return FORMATS[suffix]


def tile(
    images: torch.Tensor, nrow: int, padding: int = GRID_PADDING, pad_value: float = 1.0
) -> torch.Tensor:
    """(N, C, H, W) images as one (C, H', W') picture, `nrow` to a row, each with `padding`
    pixels of `pad_value` around it: torchvision's make_grid, whose import would cost every
    process that draws ~1.7 s (torchvision loads its models, and torch._dynamo with them)."""
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    cells = images.new_full((rows * cols, c, h + padding, w + padding), pad_value)
    cells[:n, :, padding:, padding:] = images
    grid = cells.view(rows, cols, c, h + padding, w + padding).permute(2, 0, 3, 1, 4)
    grid = grid.reshape(c, rows * (h + padding), cols * (w + padding))
    return torch.nn.functional.pad(grid, (0, padding, 0, padding), value=pad_value)


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int) -> Path:
    """Save [0, 1] images (N, C, H, W) as one grid with `nrow` images per row, as PNG, JPEG
    or WebP by the path's suffix."""
    from PIL import Image

    path = Path(path)
    kind = image_format(path)
    images = images.detach().float().cpu().clamp(0, 1)
    factor = math.ceil(MIN_TILE / images.shape[-1])
    if factor > 1:
        images = images.repeat_interleave(factor, -1).repeat_interleave(factor, -2)
    grid = tile(images.expand(-1, 3, -1, -1), nrow)  # (3, H', W'), grey as RGB
    array = grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    tmp = _atomic_path(path)
    Image.fromarray(array).save(tmp, format=kind, **({"quality": 95} if kind != "PNG" else {}))
    os.replace(tmp, path)
    return path


def _model_input(model: VAE, images: torch.Tensor) -> torch.Tensor:
    return model.coding.encode(images.to(_device(model)), dequantize=False)


@torch.no_grad()
def reconstruction_grid(
    model: VAE, images: torch.Tensor, path: str | os.PathLike, per_row: int = 8
) -> Path:
    """Rows of inputs, each followed by a row of their reconstructions (uint8 inputs)."""
    x = _model_input(model, images)
    originals, recons = model.coding.to_unit(x), model.reconstruct(x)
    rows = []
    for start in range(0, len(x), per_row):
        rows += [originals[start : start + per_row], recons[start : start + per_row]]
    return save_grid(torch.cat(rows), path, nrow=per_row)


@torch.no_grad()
def sample_grid(model: VAE, path: str | os.PathLike, n: int = 64, seed: int = 0) -> Path:
    """Decoder means of n draws z ~ N(0, I)."""
    generator = torch.Generator(_device(model)).manual_seed(seed)
    return save_grid(model.sample(n, generator), path, nrow=math.ceil(math.sqrt(n)))


@torch.no_grad()
def interpolation_grid(
    model: VAE, images: torch.Tensor, path: str | os.PathLike, steps: int = 10
) -> Path:
    """One row per pair (images[2i], images[2i+1]): the two inputs at the ends, decoded
    linear interpolations of their posterior means between them."""
    x = _model_input(model, images[: len(images) // 2 * 2])
    z = model.encode(x).mode()  # (2P, Z)
    start, end = z[0::2], z[1::2]  # (P, Z)
    w = torch.linspace(0, 1, steps, device=z.device)[:, None, None]  # (S, 1, 1)
    path_z = ((1 - w) * start + w * end).transpose(0, 1).reshape(-1, z.shape[1])  # (P*S, Z)
    decoded = model.coding.to_unit(model.decode(path_z).mean).view(len(start), steps, *x.shape[1:])
    ends = model.coding.to_unit(x).view(len(start), 2, *x.shape[1:])
    rows = torch.cat([ends[:, :1], decoded, ends[:, 1:]], dim=1)  # (P, S+2, C, H, W)
    return save_grid(rows.flatten(0, 1), path, nrow=steps + 2)


def model_grids(
    model: VAE, images: torch.Tensor, folder: str | os.PathLike, seed: int = 0
) -> list[Path]:
    """The three pictures of a model a sweep logs, in `folder`: reconstructions.png (the
    first 32 images beside their reconstructions), samples.png (64 draws from the prior) and
    interpolations.png (between pairs of the first 16 images)."""
    folder = Path(folder)
    return [
        reconstruction_grid(model, images[:32], folder / "reconstructions.png"),
        sample_grid(model, folder / "samples.png", seed=seed),
        interpolation_grid(model, images[:16], folder / "interpolations.png"),
    ]


@torch.no_grad()
def latent_means(model: VAE, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Posterior means E[z|x] of uint8 images, (N, Z) on CPU."""
    return torch.cat(
        [
            model.encode(_model_input(model, images[i : i + batch_size])).mode().cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


def latent_scatter(
    model: VAE, split: Split, path: str | os.PathLike, max_points: int = 5000
) -> Path:
    """Posterior means coloured by label: the two latent axes when latent_dim is 2, else the
    first two principal components."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(max_points, len(split))
    z = latent_means(model, split.images[:n])
    if z.shape[1] == 2:
        xy, axes = z, ("z[0]", "z[1]")
    elif z.shape[1] == 1:
        xy, axes = torch.cat([z, torch.zeros_like(z)], 1), ("z[0]", "")
    else:
        centred = z - z.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)  # v: (Z, Z), rows = PCs
        xy, axes = centred @ v[:2].T, ("PC 1 of E[z|x]", "PC 2 of E[z|x]")
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    labels = split.labels[:n].numpy() if split.labels is not None else None
    if labels is not None:
        points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4, alpha=0.7)
        fig.colorbar(points, ax=ax, label="label")
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.7)
    ax.set(xlabel=axes[0], ylabel=axes[1], title=f"posterior means of {n} images")
    tmp = _atomic_path(Path(path))
    fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return Path(path)


@torch.no_grad()
def manifold_grid(model: VAE, path: str | os.PathLike, n: int = 20) -> Path:
    """Decoded n x n grid over a 2-D latent space, at the N(0, 1) quantiles 0.05 .. 0.95 (so
    the grid covers the prior's mass evenly, as in the Keras conv-VAE tutorial)."""
    if model.latent_dim != 2:
        raise ValueError(
            f"the manifold grid needs latent_dim 2, this model has {model.latent_dim}"
        )
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))
    zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")  # z[1] grows upwards
    z = torch.stack([zx.flatten(), zy.flatten()], 1).to(_device(model))  # (n*n, 2)
    return save_grid(model.coding.to_unit(model.decode(z).mean), path, nrow=n)


@torch.no_grad()
def nearest_neighbours_grid(
    model: VAE,
    train_images: torch.Tensor,
    path: str | os.PathLike,
    n: int = 8,
    k: int = 5,
    seed: int = 0,
) -> Path:
    """Each row: a sample from the prior, then its k nearest training images (L2 on [0, 1]
    pixels): does the model generate, or recall?"""
    device = _device(model)
    samples = model.sample(n, torch.Generator(device).manual_seed(seed)).flatten(1)  # (n, D)
    best_d = torch.full((n, k), math.inf, device=device)
    best_i = torch.zeros((n, k), dtype=torch.long, device=device)
    for start in range(0, len(train_images), 4096):
        chunk = train_images[start : start + 4096].to(device).flatten(1).float() / 255.0
        d = torch.cdist(samples, chunk)  # (n, chunk)
        d_all = torch.cat([best_d, d], 1)
        i_all = torch.cat(
            [best_i, torch.arange(start, start + len(chunk), device=device).expand(n, -1)], 1
        )
        best_d, pos = d_all.topk(k, dim=1, largest=False)
        best_i = i_all.gather(1, pos)
    neighbours = train_images[best_i.cpu().flatten()].float() / 255.0  # (n*k, C, H, W)
    shape = train_images.shape[1:]
    rows = torch.cat([samples.cpu().view(n, 1, *shape), neighbours.view(n, k, *shape)], 1)
    return save_grid(rows.flatten(0, 1), path, nrow=k + 1)


def write_all(
    model: VAE,
    data: Splits,
    out_dir: str | os.PathLike,
    seed: int = 0,
) -> list[Path]:
    """Every picture that applies to `model`, under out_dir; returns the files written."""
    out = Path(out_dir)
    val = data.val.images
    files = [
        reconstruction_grid(model, val[:32], out / "reconstructions.png"),
        sample_grid(model, out / "samples.png", seed=seed),
        interpolation_grid(model, val[:16], out / "interpolations.png"),
        latent_scatter(model, data.val, out / "latent_scatter.png"),
        nearest_neighbours_grid(
            model, data.train.images, out / "nearest_neighbours.png", seed=seed
        ),
    ]
    if model.latent_dim == 2:
        files.append(manifold_grid(model, out / "manifold.png"))
    return files
