"""What the seed benchmarks need from vae_core: the Keras conv architecture (`keras_conv`),
weight initialisation schemes (`init`) and grey-level Bernoulli targets (`binarize: false`)."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_splits, tiny_config

from vae_core import config as config_module
from vae_core import fit
from vae_core.config import Config, ConfigError
from vae_core.likelihoods import PixelBernoulli
from vae_core.model import build_model


def keras_config(**changes) -> Config:
    values = {"arch": "keras_conv", "latent_dim": 2, "likelihood": "bernoulli", "binarize": False}
    return tiny_config(**(values | changes))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64])
def test_keras_conv_takes_every_size_divisible_by_its_strides(size, channels, monkeypatch):
    monkeypatch.setitem(config_module.DATASETS, "mnist", (channels, 28))
    model = build_model(keras_config(image_size=size, latent_dim=3))
    posterior, z, px_z = model(torch.rand(2, channels, size, size))
    assert posterior.mean.shape == z.shape == (2, 3)
    assert px_z.mean.shape == (2, channels, size, size)


def test_keras_conv_has_the_tutorials_layers_and_parameter_counts():
    model = build_model(keras_config())
    # The tutorial's encoder.summary() and decoder.summary(): 69,076 and 65,089 parameters.
    assert sum(p.numel() for p in model.encoder.parameters()) == 69_076
    assert sum(p.numel() for p in model.decoder.parameters()) == 65_089
    shapes, x = [], torch.rand(1, 1, 28, 28)
    for layer in model.encoder.net:
        x = layer(x)
        if isinstance(layer, torch.nn.Conv2d):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(32, 14, 14), (64, 7, 7)]  # Keras: (14, 14, 32), (7, 7, 64)


def test_keras_conv_pads_as_tensorflow_same_the_extra_row_and_column_after():
    conv = build_model(keras_config()).encoder.net[:2]  # ZeroPad2d + Conv2d(1, 32, 3, s=2)
    x = torch.rand(1, 1, 28, 28)
    base = conv(x)
    for row, rows_hit in [(2, {0, 1}), (1, {0}), (27, {13})]:
        moved = x.clone()
        moved[0, 0, row, row] += 1.0
        changed = (conv(moved) - base).abs().sum((0, 1)) > 0  # (14, 14)
        hit = set(changed.nonzero()[:, 0].tolist())
        # TF 'same' window i covers rows 2i..2i+2 (PyTorch's padding=1 would be 2i-1..2i+1)
        assert hit == rows_hit, (row, hit)


def test_keras_conv_transposed_layers_are_the_adjoint_of_the_same_padded_convolution():
    # TF defines conv2d_transpose as the gradient of conv2d; check <C x, g> == <x, C^T g>.
    decoder = build_model(keras_config()).decoder.net
    up, crop = decoder[3], decoder[4]  # ConvTranspose2d(64, 64, 3, s=2), crop to 2n
    down = torch.nn.Sequential(
        torch.nn.ZeroPad2d((0, 1, 0, 1)), torch.nn.Conv2d(64, 64, 3, stride=2, bias=False)
    )
    down[1].weight.data.copy_(up.weight.data)  # same (in, out) pairing, read the other way
    x, g = torch.randn(1, 64, 14, 14, dtype=torch.float64), torch.randn(1, 64, 7, 7)
    down, up = down.double(), up.double()
    g = g.double()
    forward = (down(x) * g).sum()
    adjoint = (x * crop(F.conv_transpose2d(g, up.weight, stride=2))).sum()
    assert torch.allclose(forward, adjoint)


@pytest.mark.parametrize(("size", "widths"), [(30, None), (28, [16, 32, 64]), (20, [8, 8, 8, 8])])
def test_keras_conv_refuses_sizes_its_strides_cannot_halve_by_name(size, widths):
    with pytest.raises(ConfigError, match=rf"data.image_size: got {size}; the keras_conv arch"):
        keras_config(image_size=size, widths=widths)


def _layers(model):
    kinds = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    return [m for m in model.modules() if isinstance(m, kinds)]


def test_xavier_init_is_glorot_uniform_with_zero_biases():
    model = build_model(keras_config(init="xavier"))
    for layer in _layers(model):
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound
        if layer.weight.numel() > 2000:  # enough draws: U(-b, b) has std b / sqrt(3)
            assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert torch.count_nonzero(layer.bias) == 0


def test_truncated_normal_init_is_the_tf_tutorials_weight_and_bias_variables():
    model = build_model(tiny_config(init="truncated_normal", hidden_dims=[500]))
    for layer in _layers(model):
        assert layer.weight.abs().max() <= 0.2  # tf.truncated_normal(stddev=0.1): within 2 sd
        assert torch.all(layer.bias == 0.1)  # tf.constant(0.1)
    # N(0, 0.1^2) truncated at 2 sd has std 0.1 * 0.8796
    first = _layers(model)[0].weight
    assert first.std().item() == pytest.approx(0.08796, rel=0.02)


def test_default_init_keeps_pytorchs_layer_defaults():
    torch.manual_seed(0)
    default = build_model(tiny_config())
    torch.manual_seed(0)
    explicit = build_model(tiny_config(init="default"))
    for a, b in zip(default.parameters(), explicit.parameters(), strict=True):
        assert torch.equal(a, b)
    assert _layers(default)[0].bias.unique().numel() > 1  # not a constant as the other schemes


def test_grey_level_targets_give_the_keras_cross_entropy():
    model = build_model(keras_config())
    pixels = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    x = model.coding.encode(pixels)
    assert torch.equal(x, pixels.float() / 255)  # no binarisation, no noise
    logits = torch.randn(4, 1, 28, 28)
    px_z = PixelBernoulli(logits)
    # Keras: 28 * 28 * binary_crossentropy(flatten(x), flatten(sigmoid(logits))), per image
    keras = 784 * F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none").mean(
        (1, 2, 3)
    )
    assert torch.allclose(-px_z.log_prob(x), keras, rtol=1e-4)
    assert torch.equal(
        build_model(tiny_config(likelihood="bernoulli")).coding.encode(pixels),
        (pixels >= 128).float(),
    )  # the default still binarises


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"init": "he"}, "model.init: got 'he'; expected one of ['default', 'xavier', "),
        ({"binarize": "no"}, "data.binarize: got 'no'; expected true or false"),
        ({"arch": "keras_conv", "image_size": 30}, "divisible by 4"),
    ],
)
def test_bad_seed_options_name_the_field_and_what_is_allowed(values, message):
    with pytest.raises(ConfigError) as err:
        Config.from_dict(values)
    assert message in str(err.value)


def test_a_run_resumes_only_with_the_same_binarisation():
    config = tiny_config(likelihood="bernoulli", epochs=1)
    state = fit(config, make_splits(n=32))
    changed = config.replace(binarize=False, epochs=2)
    with pytest.raises(ConfigError, match="data.binarize: the checkpoint was trained with True"):
        fit(changed, make_splits(n=32), resume_from=state.checkpoint())
