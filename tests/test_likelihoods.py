"""Log-densities and KL against torch.distributions; the pixel coding's ranges."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from vae_core.likelihoods import (
    DiagonalGaussian,
    PixelBernoulli,
    PixelCoding,
    PixelGaussian,
    standard_normal_log_prob,
)


@pytest.fixture
def posterior() -> DiagonalGaussian:
    g = torch.Generator().manual_seed(0)
    return DiagonalGaussian(torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g))


def _normal(q: DiagonalGaussian) -> Independent:
    return Independent(Normal(q.mean, q.logvar.mul(0.5).exp()), 1)


def test_kl_matches_torch_distributions(posterior):
    prior = Independent(Normal(torch.zeros(5, 7), torch.ones(5, 7)), 1)
    torch.testing.assert_close(posterior.kl(), kl_divergence(_normal(posterior), prior))


def test_kl_of_the_prior_itself_is_zero():
    q = DiagonalGaussian(torch.zeros(3, 4), torch.zeros(3, 4))
    assert torch.equal(q.kl(), torch.zeros(3))


def test_posterior_log_prob_and_prior_log_prob(posterior):
    z = posterior.sample(torch.Generator().manual_seed(1))
    torch.testing.assert_close(posterior.log_prob(z), _normal(posterior).log_prob(z))
    prior = Independent(Normal(torch.zeros(7), torch.ones(7)), 1)
    torch.testing.assert_close(standard_normal_log_prob(z), prior.log_prob(z))


def test_reparameterised_sample_has_the_posterior_moments():
    q = DiagonalGaussian(
        torch.tensor([[2.0, -1.0]]).expand(200_000, 2),
        torch.tensor([[math.log(0.25), math.log(4.0)]]).expand(200_000, 2),
    )
    z = q.sample(torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), torch.tensor([2.0, -1.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([0.5, 2.0]), atol=0.02, rtol=0)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.7])
def test_gaussian_log_likelihood_is_the_full_density(sigma):
    g = torch.Generator().manual_seed(2)
    mean, x = torch.rand(4, 3, 8, 8, generator=g), torch.rand(4, 3, 8, 8, generator=g)
    px = PixelGaussian(mean, torch.tensor(math.log(sigma)))
    expected = Normal(mean, sigma).log_prob(x).sum((1, 2, 3))  # normalising constant included
    torch.testing.assert_close(px.log_prob(x), expected)


def test_bernoulli_log_likelihood():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 1, 6, 6, generator=g) * 3
    x = (torch.rand(4, 1, 6, 6, generator=g) > 0.5).float()
    expected = Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(PixelBernoulli(logits).log_prob(x), expected)


def test_dequantised_pixels_stay_in_their_bins():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).repeat(50, 1, 1, 1)
    y = PixelCoding("gaussian").encode(x, torch.Generator().manual_seed(0))
    low = x.float() / 256
    assert bool(((y >= low) & (y < low + 1 / 256)).all())
    signed = PixelCoding("gaussian", "signed").encode(x, dequantize=False)
    torch.testing.assert_close(signed, 2 * (x.float() + 0.5) / 256 - 1)
    assert signed.min() > -1 and signed.max() < 1


def test_bernoulli_coding_binarises_at_half_intensity():
    x = torch.tensor([0, 127, 128, 255], dtype=torch.uint8).view(1, 1, 2, 2)
    assert PixelCoding("bernoulli").encode(x).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]
