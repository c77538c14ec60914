"""The built-in `shapes` dataset: deterministic, factors in range, pictures that match them."""

import math

import numpy as np
import pytest
from conftest import tiny_config

from vae_core.data import load_splits, shapes


def test_same_seed_same_bytes_and_splits_differ():
    a, fa = shapes.generate("test", size=32, count=50)
    b, fb = shapes.generate("test", size=32, count=50)
    assert np.array_equal(a, b) and all(np.array_equal(fa[k], fb[k]) for k in fa)
    c, _ = shapes.generate("train", size=32, count=50)
    assert not np.array_equal(a, c)


def test_factors_stay_in_their_ranges():
    factors = shapes.sample_factors(5000, seed=0)
    assert set(factors) == set(shapes.FACTOR_NAMES)
    for name, (low, high) in shapes.FACTOR_RANGES.items():
        assert low <= factors[name].min() and factors[name].max() <= high, name
    assert set(np.unique(factors["shape"])) == {0, 1, 2, 3}


def test_pictures_match_their_factors():
    images, factors = shapes.generate("train", size=64, count=200)
    assert images.shape == (200, 3, 64, 64) and images.dtype == np.uint8
    for i in range(200):
        lit = images[i].max(0) > 127  # (64, 64) the shape's pixels
        ys, xs = np.nonzero(lit)
        # centred where the factors say (up to the shape's own asymmetry: heart, triangle)
        assert abs(xs.mean() / 64 - factors["x"][i]) < 0.06
        assert abs(ys.mean() / 64 - factors["y"][i]) < 0.06
        # a brighter channel for a hue: red-ish hues light channel 0 most
        if factors["hue"][i] < 0.05 or factors["hue"][i] > 0.95:
            assert images[i, 0][lit].mean() > images[i, 2][lit].mean()
    circles = factors["shape"] == 1
    areas = (images.max(1) > 127).sum((1, 2))[circles]
    expected = math.pi * (factors["scale"][circles] / 4 * 64) ** 2
    assert np.allclose(areas, expected, rtol=0.1)


def test_shapes_dataset_through_the_cache_keeps_its_factors():
    splits = load_splits(tiny_config(dataset="shapes", image_size=32, limit=100))
    assert splits.train.images.shape[1:] == (3, 32, 32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (90, 10, 100)
    assert set(splits.train.factors) == set(shapes.FACTOR_NAMES)
    assert splits.train.labels.tolist() == splits.train.factors["shape"].tolist()


@pytest.mark.parametrize("color", ["gray", "rgb"])
def test_shapes_in_gray(color):
    splits = load_splits(tiny_config(dataset="shapes", image_size=32, limit=20, color=color))
    assert splits.test.images.shape[1] == {"gray": 1, "rgb": 3}[color]
