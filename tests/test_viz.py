"""Every picture is a real PNG of the expected layout."""

import numpy as np
import pytest
import torch
from conftest import ALL_IMAGES, make_splits, tiny_config
from PIL import Image

from vae_core import viz
from vae_core.model import build_model
from vae_core.trainer import fit

TILE = 28 * 3 + viz.GRID_PADDING  # 28 px images are enlarged 3x; one tile plus its padding


def _size(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.format, im.size


@pytest.fixture(scope="module")
def trained_2d():
    data = make_splits(64)
    return fit(tiny_config(latent_dim=2, epochs=2), data).model, data


def test_write_all_writes_every_picture(trained_2d, tmp_path):
    model, data = trained_2d
    files = viz.write_all(model, data, tmp_path)
    assert {p.name for p in files} == ALL_IMAGES
    assert all(_size(p)[0] == "PNG" for p in files)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_grid_layouts(trained_2d, tmp_path):
    model, data = trained_2d
    pad = viz.GRID_PADDING
    # 16 inputs, 8 per row: 2 x (input row + reconstruction row)
    recon = viz.reconstruction_grid(model, data.val.images[:16], tmp_path / "r.png")
    assert _size(recon)[1] == (8 * TILE + pad, 4 * TILE + pad)
    interp = viz.interpolation_grid(model, data.val.images[:6], tmp_path / "i.png", steps=5)
    assert _size(interp)[1] == (7 * TILE + pad, 3 * TILE + pad)
    nn = viz.nearest_neighbours_grid(model, data.train.images, tmp_path / "n.png", n=3, k=4)
    assert _size(nn)[1] == (5 * TILE + pad, 3 * TILE + pad)
    manifold = viz.manifold_grid(model, tmp_path / "m.png", n=6)
    assert _size(manifold)[1] == (6 * TILE + pad, 6 * TILE + pad)


def test_interpolation_ends_are_the_inputs(trained_2d, tmp_path):
    model, data = trained_2d
    path = viz.interpolation_grid(model, data.val.images[:2], tmp_path / "i.png", steps=3)
    grid = torch.from_numpy(np.array(Image.open(path)))[..., 0]  # (H, W)
    first_tile = grid[
        viz.GRID_PADDING : viz.GRID_PADDING + 84 : 3, viz.GRID_PADDING : viz.GRID_PADDING + 84 : 3
    ]
    expected = ((data.val.images[0, 0].float() + 0.5) / 256 * 255).round().to(torch.uint8)
    assert torch.equal(first_tile, expected)


def test_nearest_neighbours_finds_a_training_image_itself(tmp_path):
    data = make_splits(32)
    model = build_model(tiny_config())
    # A training image that equals the decoded sample must come out as its first neighbour.
    sample = model.sample(1, torch.Generator().manual_seed(0))
    images = data.train.images.clone()
    images[17] = (sample[0] * 255).round().to(torch.uint8)
    best = viz.nearest_neighbours_grid(model, images, tmp_path / "n.png", n=1, k=1)
    grid = torch.from_numpy(np.array(Image.open(best)))[..., 0]
    left, right = grid[:, :TILE], grid[:, TILE : 2 * TILE]
    assert (left.float() - right.float()).abs().max() <= 1


def test_manifold_needs_a_two_dimensional_latent(tmp_path):
    with pytest.raises(ValueError, match="needs latent_dim 2, this model has 3"):
        viz.manifold_grid(build_model(tiny_config(latent_dim=3)), tmp_path / "m.png")


def test_scatter_without_labels_and_with_many_dimensions(tmp_path):
    data = make_splits(32)
    data.val.labels = None
    model = build_model(tiny_config(latent_dim=6))
    assert _size(viz.latent_scatter(model, data.val, tmp_path / "s.png"))[0] == "PNG"


@pytest.mark.parametrize("n,channels", [(2, 1), (5, 3), (8, 1), (9, 3), (16, 3)])
def test_tile_lays_images_out_as_torchvision_s_make_grid(n, channels):
    """viz.tile stands in for make_grid (whose import costs each process ~1.7 s): same picture."""
    from torchvision.utils import make_grid

    images = torch.rand(n, channels, 7, 5)
    expected = make_grid(images, nrow=4, padding=viz.GRID_PADDING, pad_value=1.0)
    got = viz.tile(images.expand(-1, 3, -1, -1), 4)
    assert torch.equal(got, expected)
