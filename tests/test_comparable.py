"""Comparability keys and the registered names they default to (sweeps.comparable)."""

import pytest
from ray import tune

from sweeps import celeba, mnist, shapes
from sweeps.comparable import check_one_key, key, registry_name
from vae_core import Config, ConfigError


def config(**fields) -> Config:
    return Config.from_dict(fields)


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        (celeba.BASE_64, "celeba-vae"),
        (celeba.BASE_128, "celeba128-tight-vae"),
        (shapes.BASE_CONFIG, "shapes32-vae"),  # 32 px: not the dataset's 64
        ({"dataset": "shapes"}, "shapes-vae"),
        (mnist.BASE_CONFIG, "mnist-vae"),
        ({"dataset": "mnist", "likelihood": "bernoulli"}, "mnist-binary-vae"),
        (
            {"dataset": "mnist", "likelihood": "bernoulli", "binarize": False},
            "mnist-grey-xent-vae",
        ),
        ({"dataset": "fashion_mnist", "limit": 1000}, "fashion-mnist-limit1000-vae"),
        ({"dataset": "celeba", "color": "gray", "val_fraction": 0.2}, "celeba-gray-val0.2-vae"),
    ],
)
def test_each_key_has_its_own_default_name(fields, name):
    assert registry_name(config(**fields), None, smoke_test=False) == name


def test_a_smoke_test_never_touches_a_real_name():
    smoke = config(**shapes.BASE_CONFIG, limit=256)  # what --smoke-test makes of the base
    assert registry_name(smoke, None, smoke_test=True) == "shapes32-vae-smoke"
    assert registry_name(smoke, "faces", smoke_test=True) == "faces-smoke"
    assert registry_name(smoke, "faces", smoke_test=False) == "faces"


def test_the_key_names_what_bits_per_dimension_are_over():
    assert key(config(**celeba.BASE_128)) == "celeba/128px/3ch/tight/all/val0.1/continuous"
    gaussian, learned = config(likelihood="gaussian"), config(likelihood="gaussian_learned")
    assert key(gaussian) == key(learned)  # one family: both over dequantised pixels
    assert key(config(pixel_range="signed")) == key(gaussian)  # 8-bit scale either way
    assert key(config(likelihood="bernoulli")) != key(gaussian)


def test_a_space_of_one_key_passes_and_one_of_several_is_refused_naming_the_field():
    base = config(**shapes.BASE_CONFIG)
    check_one_key({"likelihood": tune.choice(["gaussian", "gaussian_learned"])}, base)
    check_one_key({"binarize": tune.choice([True, False])}, base)  # Gaussian: no effect
    with pytest.raises(ConfigError, match="search space 'binarize'.*mixes likelihood families"):
        check_one_key(
            {"binarize": tune.choice([True, False])}, base.replace(likelihood="bernoulli")
        )
    with pytest.raises(ConfigError, match="search space 'crop'.*over different data"):
        check_one_key({"crop": tune.choice(["center", "tight"])}, base)
