"""Bits per dimension by hand, the metrics pipeline against torch.distributions, active units,
and the importance-weighted bound."""

import math

import torch
from conftest import tiny_config
from torch.distributions import Independent, Normal, kl_divergence

from vae_core.likelihoods import PixelCoding
from vae_core.metrics import active_units, effective_beta, evaluate, iwae_nll, to_bpd
from vae_core.model import build_model
from vae_core.trainer import fit


def test_uniform_density_is_eight_bits_per_dimension_in_either_pixel_range():
    # The uniform density on the model's pixel range is the uniform distribution over 256
    # levels: exactly 8 bits per dimension, whether the model works in [0, 1] or [-1, 1].
    dims = 784
    for pixel_range, width in (("unit", 1.0), ("signed", 2.0)):
        coding = PixelCoding("gaussian", pixel_range)
        nll_model_space = dims * math.log(width)  # -log of density 1/width per dimension
        nll_8bit = nll_model_space + dims * coding.log_det_per_dim
        assert math.isclose(to_bpd(nll_8bit, dims), 8.0, rel_tol=1e-12)
    assert PixelCoding("bernoulli").log_det_per_dim == 0.0


def test_bpd_by_hand_for_one_image():
    # D = 4 pixels, model-space NLL of 10 nats, unit range: 10 / (4 ln 2) + log2(256) bits.
    coding = PixelCoding("gaussian", "unit")
    nelbo = 10.0 + 4 * coding.log_det_per_dim
    assert math.isclose(to_bpd(nelbo, 4), 10 / (4 * math.log(2)) + 8, rel_tol=1e-12)
    signed = PixelCoding("gaussian", "signed")
    assert math.isclose(
        to_bpd(10.0 + 4 * signed.log_det_per_dim, 4), 10 / (4 * math.log(2)) + 7, rel_tol=1e-12
    )


def test_evaluate_matches_an_independent_computation(splits):
    config = tiny_config(
        likelihood="gaussian", sigma_x=0.2, pixel_range="signed", mean_activation="squash"
    )
    model = build_model(config).eval()
    images = splits.val.images
    got = evaluate(model, images, batch_size=7, seed=5)

    # The same noise, drawn in the same order, through torch.distributions.
    g = torch.Generator().manual_seed(5)
    nelbo, kl_total, sq = 0.0, 0.0, 0.0
    for start in range(0, len(images), 7):
        u8 = images[start : start + 7]
        y = 2 * (u8.float() + torch.rand(u8.shape, generator=g)) / 256 - 1
        mean, raw = model.encoder(y).chunk(2, dim=-1)
        logvar = 4.0 - torch.nn.functional.softplus(4.0 - raw)  # the model's soft bound
        q = Independent(Normal(mean, (0.5 * logvar).exp()), 1)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=g)
        px = Independent(Normal(torch.tanh(model.decoder(z)), 2 * 0.2), 3)
        kl = kl_divergence(q, Independent(Normal(torch.zeros_like(mean), 1.0), 1))
        nelbo += (-px.log_prob(y) + kl).sum().item()
        kl_total += kl.sum().item()
        recon = (torch.tanh(model.decoder(mean)) + 1) / 2
        sq += (recon - (u8.float() + 0.5) / 256).pow(2).sum().item()
    n, dims = len(images), 784
    nelbo = nelbo / n + dims * math.log(128)  # [-1, 1] has 2 units per [0, 1] unit
    assert math.isclose(got["val_nelbo"], nelbo, rel_tol=1e-5)
    assert math.isclose(got["val_bpd"], nelbo / (dims * math.log(2)), rel_tol=1e-5)
    assert math.isclose(got["val_kl"], kl_total / n, rel_tol=1e-5)
    assert math.isclose(got["val_mse"], sq / (n * dims), rel_tol=1e-5)


def test_the_calibrated_bound_is_the_bound_at_the_best_shared_sigma(splits):
    """val_bpd_calibrated is val_bpd with sigma_x at its optimum on the split: below val_bpd
    for any other sigma_x, equal to it at sigma* = sqrt(mean squared residual), computed here
    independently with the same noise."""
    config = tiny_config(likelihood="gaussian", sigma_x=0.3, pixel_range="signed")
    model = build_model(config).eval()
    images = splits.val.images
    got = evaluate(model, images, batch_size=7, seed=5)
    g = torch.Generator().manual_seed(5)
    sq, n, dims = 0.0, len(images), 784
    for start in range(0, n, 7):
        u8 = images[start : start + 7]
        y = 2 * (u8.float() + torch.rand(u8.shape, generator=g)) / 256 - 1
        posterior = model.encode(y)
        z = posterior.sample(g)
        sq += (y - model.decoder(z)).pow(2).sum().item()
    sigma_star = math.sqrt(sq / (n * dims))  # model space ([-1, 1]): sigma_x = sigma* / 2
    assert got["val_bpd_calibrated"] < got["val_bpd"]
    with torch.no_grad():
        model.log_sigma_x.fill_(math.log(sigma_star))
    at_optimum = evaluate(model, images, batch_size=7, seed=5)
    assert math.isclose(at_optimum["val_bpd"], got["val_bpd_calibrated"], rel_tol=1e-5)
    assert math.isclose(at_optimum["val_bpd_calibrated"], got["val_bpd_calibrated"], rel_tol=1e-6)
    # beta * sigma^2 in the loss's units: sigma_x = 0.3 on [0, 1] is 0.6 on [-1, 1].
    assert math.isclose(effective_beta(build_model(config), 2.0), 2.0 * 0.6**2, rel_tol=1e-6)
    bernoulli = build_model(tiny_config(likelihood="bernoulli"))
    assert "val_bpd_calibrated" not in evaluate(bernoulli, images)
    assert effective_beta(bernoulli, 1.0) is None


def test_evaluate_is_deterministic_and_leaves_the_mode_alone(splits):
    model = build_model(tiny_config()).train()
    a, b = evaluate(model, splits.val.images), evaluate(model, splits.val.images)
    assert a == b
    assert model.training


def test_active_units_counts_dimensions_whose_mean_varies():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(10_000, 4, generator=g) * torch.tensor([1.0, 0.05, 0.5, 0.0])
    assert active_units(means) == 2  # variances 1, 0.0025, 0.25, 0 against 0.01


def test_importance_weighted_bound_is_tighter_than_the_elbo(splits):
    state = fit(tiny_config(epochs=3, latent_dim=2, likelihood="gaussian_learned"), splits)
    images = splits.test.images
    nelbo = evaluate(state.model, images, seed=1)["val_nelbo"]
    k1 = iwae_nll(state.model, images, k=1, seed=1)
    k64 = iwae_nll(state.model, images, k=64, seed=1)
    assert k64 < k1 and k64 < nelbo
    assert abs(k1 - nelbo) / nelbo < 0.05  # k = 1 is an unbiased ELBO estimate
