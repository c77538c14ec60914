"""Every architecture at every image size it takes, grayscale and RGB; sizes it cannot take."""

import pytest
import torch
from conftest import tiny_config

from vae_core import config as config_module
from vae_core.config import ConfigError
from vae_core.model import build_model

CASES = [
    ("mlp", 28),
    ("mlp", 32),
    ("conv", 28),
    ("conv", 32),
    ("conv", 64),
    ("conv_bn", 64),
    ("conv_bn", 128),
]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("arch", "size"), CASES)
def test_shapes_for_every_architecture_and_size(arch, size, channels, monkeypatch):
    monkeypatch.setitem(config_module.DATASETS, "mnist", (channels, 28))  # until RGB datasets
    config = tiny_config(arch=arch, image_size=size, latent_dim=5, widths=None, hidden_dims=[32])
    model = build_model(config)
    x = torch.rand(3, channels, size, size)
    posterior, z, px_z = model(x)
    assert posterior.mean.shape == posterior.logvar.shape == z.shape == (3, 5)
    assert px_z.mean.shape == (3, channels, size, size)
    assert model.sample(2).shape == (2, channels, size, size)


def test_conv_bn_has_five_batch_norm_blocks_at_128_px():
    model = build_model(tiny_config(arch="conv_bn", image_size=128))
    strided = [
        m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)
    ]
    assert len(strided) == 5
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules()) == 5


@pytest.mark.parametrize("size", [32, 64])
def test_conv_bn_refine_ends_the_decoder_with_a_full_resolution_3x3_convolution(size):
    seed = build_model(tiny_config(arch="conv_bn", image_size=size, latent_dim=5))
    refined = build_model(tiny_config(arch="conv_bn", image_size=size, latent_dim=5, refine=8))
    *_, upsample, norm, _, out = refined.decoder.net
    assert (upsample.out_channels, upsample.stride, norm.num_features) == (8, (2, 2), 8)
    assert (type(out), out.in_channels, out.out_channels) == (torch.nn.Conv2d, 8, 1)
    assert (out.kernel_size, out.stride, out.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(seed.decoder.net[-1], torch.nn.ConvTranspose2d)  # the seed's output layer
    assert refined.decode(torch.randn(2, 5)).mean.shape == (2, 1, size, size)
    assert refined.encoder.state_dict().keys() == seed.encoder.state_dict().keys()


def test_conv_follows_the_celeba_notebook_at_64_px():
    model = build_model(tiny_config(arch="conv", image_size=64))
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size, m.stride) for m in convs] == [
        (32, (4, 4), (2, 2)),
        (32, (4, 4), (2, 2)),
        (64, (4, 4), (2, 2)),
        (64, (4, 4), (2, 2)),
        (256, (4, 4), (1, 1)),
    ]


def test_mlp_is_784_500_500_z_by_default():
    config = tiny_config(arch="mlp", hidden_dims=[500, 500], latent_dim=20)
    linears = [m for m in build_model(config).encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 500),
        (500, 500),
        (500, 40),
    ]


@pytest.mark.parametrize(
    ("arch", "size"),
    [("conv", 100), ("conv", 18), ("conv_bn", 28), ("conv_bn", 256), ("conv_bn", 96)],
)
def test_sizes_an_architecture_cannot_take_are_refused_by_name(arch, size):
    with pytest.raises(ConfigError, match=rf"data.image_size: got {size}; the {arch} arch"):
        tiny_config(arch=arch, image_size=size)


def test_squashed_means_stay_in_the_pixel_range_and_linear_ones_are_clamped_for_display():
    z = torch.randn(64, 4) * 3
    signed = build_model(tiny_config(pixel_range="signed", mean_activation="squash"))
    mean = signed.decode(z).mean
    assert mean.min() < 0 and mean.min() >= -1 and mean.max() <= 1
    unit = build_model(tiny_config(mean_activation="squash"))
    assert 0 <= unit.decode(z).mean.min() and unit.decode(z).mean.max() <= 1
    linear = build_model(tiny_config(mean_activation="none"))
    torch.testing.assert_close(linear.decode(z).mean, linear.decoder(z))
    shown = linear.coding.to_unit(linear.decode(z * 100).mean)
    assert 0 <= shown.min() and shown.max() <= 1


def test_sigma_x_is_stated_on_the_unit_scale_and_learned_only_when_asked():
    fixed = build_model(tiny_config(sigma_x=0.25, pixel_range="signed"))
    assert abs(fixed.sigma_x - 0.25) < 1e-6
    assert "log_sigma_x" not in dict(fixed.named_parameters())
    learned = build_model(tiny_config(likelihood="gaussian_learned", sigma_x=0.25))
    assert dict(learned.named_parameters())["log_sigma_x"].requires_grad
    assert build_model(tiny_config(likelihood="bernoulli")).sigma_x is None
