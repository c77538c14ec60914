"""Configs from plain dicts and YAML; the bad-config table and its messages."""

import pytest

from vae_core.config import Config, ConfigError

BAD = [
    ({"latent_dim": 0}, "model.latent_dim: got 0; expected an integer >= 1"),
    ({"latent_dim": 2.5}, "model.latent_dim: got 2.5; expected an integer >= 1"),
    ({"sigma_x": 0}, "model.sigma_x: got 0; expected a number > 0"),
    ({"sigma_x": -0.1}, "model.sigma_x: got -0.1; expected a number > 0"),
    ({"kl_weight": -1}, "train.kl_weight: got -1; expected a number >= 0"),
    ({"arch": "resnet"}, "model.arch: got 'resnet'; expected one of ['mlp', 'conv', 'conv_bn',"),
    ({"likelihood": "laplace"}, "model.likelihood: got 'laplace'; expected one of"),
    ({"dataset": "cifar10"}, "data.dataset: got 'cifar10'; expected one of ['mnist'"),
    ({"arch": "conv_bn", "image_size": 28}, "data.image_size: got 28; the conv_bn architecture"),
    ({"arch": "conv", "image_size": 100}, "data.image_size: got 100; the conv architecture"),
    ({"arch": "conv", "refine": 16}, "model.refine: got 16; only the conv_bn decoder has"),
    ({"arch": "conv_bn", "image_size": 32, "refine": -1}, "model.refine: got -1; expected an"),
    ({"likelihood": "bernoulli", "pixel_range": "signed"}, "data.pixel_range: got 'signed'"),
    ({"activation": "swish"}, "model.activation: got 'swish'"),
    ({"lr": 0}, "train.lr: got 0; expected a number > 0"),
    ({"lr": "fast"}, "train.lr: got 'fast'; expected a number > 0"),
    ({"epochs": 0}, "train.epochs: got 0"),
    ({"batch_size": -4}, "train.batch_size: got -4"),
    ({"val_fraction": 1.0}, "data.val_fraction: got 1.0; expected a number strictly between"),
    ({"grad_clip": 0}, "train.grad_clip: got 0"),
    ({"device": "tpu"}, "train.device: got 'tpu'"),
    ({"hidden_dims": []}, "model.hidden_dims: got (); expected a non-empty list"),
    ({"sigma_x": float("nan")}, "model.sigma_x: got nan"),
    ({"latent_size": 8}, "latent_size: unknown field in the config; known fields: arch, "),
    ({"model": {"kl_weight": 2}}, "kl_weight: unknown field in section 'model'"),
]


@pytest.mark.parametrize(("values", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_configs_name_the_field_the_value_and_what_is_allowed(values, message):
    with pytest.raises(ConfigError) as err:
        Config.from_dict(values)
    assert message in str(err.value)


def test_flat_and_nested_dicts_build_the_same_config():
    flat = Config.from_dict({"latent_dim": 8, "kl_weight": 4.0, "dataset": "fashion_mnist"})
    nested = Config.from_dict(
        {
            "model": {"latent_dim": 8},
            "train": {"kl_weight": 4.0},
            "data": {"dataset": "fashion_mnist"},
        }
    )
    assert flat == nested
    assert flat.model.latent_dim == 8 and flat.train.kl_weight == 4.0


def test_to_dict_round_trips_and_flat_names_sections():
    config = Config.from_dict({"arch": "conv_bn", "image_size": 64, "widths": [8, 16, 32, 64]})
    assert Config.from_dict(config.to_dict()) == config
    assert config.flat()["model.widths"] == [8, 16, 32, 64]
    assert config.channels == 1  # MNIST's image channels; the conv widths are `widths`
    assert config.replace(latent_dim=3).model.latent_dim == 3


def test_yaml_style_exponent_strings_become_floats():
    # YAML 1.1 reads `lr: 1e-3` as a string; float fields accept it.
    assert Config.from_dict({"lr": "1e-3", "sigma_x": "0.05"}).train.lr == 1e-3


def test_native_image_size_and_channels_come_from_the_dataset():
    config = Config()
    assert (config.channels, config.image_size) == (1, 28)
    assert Config.from_dict({"image_size": 32}).image_size == 32
