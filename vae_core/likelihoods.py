"""Distributions of a VAE: the diagonal Gaussian posterior and the pixel likelihoods.

Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (KL in appendix B);
Rybkin, Daniilidis & Levine, "Simple and Effective VAE Training with Calibrated Decoders",
ICML 2021 (one shared, learned sigma_x). Every log-density here is the full one, normalising
constant included, summed over dimensions: shape (B,), nats per image.

`PixelCoding` maps stored uint8 pixels to what the model sees and back, and knows the change
of variables that puts a model-space density on the 8-bit scale (see vae_core.metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def _sum_dims(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)  # (B, ...) -> (B,)


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))), each of shape (B, Z)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        self.mean, self.logvar = mean, logvar

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised z = mean + std * eps, eps ~ N(0, I): differentiable in both."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) = 1/2 sum_j (mean_j^2 + var_j - logvar_j - 1), shape (B,)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - self.logvar - 1).sum(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) for z of shape (..., B, Z), summed over Z."""
        return -0.5 * (((z - self.mean) / self.std).pow(2) + self.logvar + LOG_2PI).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


class PixelGaussian:
    """p(x|z) = prod_i N(x_i; mean_i, sigma^2), one sigma shared by all pixels.

    log p(x|z) = sum_i [ -(x_i - mean_i)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2 ]
    """

    def __init__(self, mean: torch.Tensor, log_sigma: torch.Tensor) -> None:
        self.mean, self.log_sigma = mean, log_sigma  # (B, C, H, W), scalar

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) * torch.exp(-self.log_sigma)
        return _sum_dims(-0.5 * z.pow(2) - self.log_sigma - 0.5 * LOG_2PI)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device)
        return self.mean + torch.exp(self.log_sigma) * noise


class PixelBernoulli:
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i)) over binarised pixels x_i in {0, 1}.

    log p(x|z) = sum_i [ x_i log sigmoid(l_i) + (1 - x_i) log sigmoid(-l_i) ]
    """

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits  # (B, C, H, W)

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -_sum_dims(F.binary_cross_entropy_with_logits(self.logits, x, reduction="none"))

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(self.mean, generator=generator)


PixelDistribution = PixelGaussian | PixelBernoulli


@dataclass(frozen=True)
class PixelCoding:
    """How stored uint8 pixels become the model's inputs and targets, and back.

    gaussian*: uniform dequantisation y = (x + u) / 256, u ~ U[0, 1) per pixel (the bin
    centre (x + 0.5) / 256 when not dequantising), then y -> 2y - 1 for the signed range.
    bernoulli: a fixed binarisation x >= 128, so p(x|z) is a proper discrete distribution;
    with binarize=False the grey levels x / 255 instead (the Keras tutorials' cross-entropy on
    [0, 1] targets, which is no likelihood of the grey levels).
    """

    likelihood: str
    pixel_range: str = "unit"
    binarize: bool = True

    @property
    def scale(self) -> float:
        """Model-space units per [0, 1] unit: 2 for [-1, 1], else 1."""
        return 2.0 if self.pixel_range == "signed" else 1.0

    @property
    def log_det_per_dim(self) -> float:
        """Nats per dimension to add to a model-space NLL to put it on the 8-bit scale.

        A density p_m over model-space values y_m = a * (x + u) / 256 + b is the density
        p_m(y_m) * a / 256 over the dequantised 8-bit values x + u in [0, 256), so
        -log p_8bit = -log p_m + log(256 / a) per dimension. Bernoulli is already discrete.
        """
        return 0.0 if self.likelihood == "bernoulli" else math.log(256.0 / self.scale)

    def encode(
        self, x: torch.Tensor, generator: torch.Generator | None = None, dequantize: bool = True
    ) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float model-space pixels on x's device."""
        if self.likelihood == "bernoulli":
            return (x >= 128).float() if self.binarize else x.float().div_(255.0)
        # One float buffer, updated in place: this runs on every batch.
        if dequantize:
            y = torch.rand(x.shape, generator=generator, device=x.device)
        else:
            y = torch.full(x.shape, 0.5, device=x.device)
        y.add_(x).mul_(self.scale / 256.0)
        return y.sub_(1.0) if self.pixel_range == "signed" else y

    def to_unit(self, y: torch.Tensor) -> torch.Tensor:
        """Model-space pixels (or a decoder mean) -> [0, 1] for display and MSE."""
        if self.pixel_range == "signed":
            y = (y + 1.0) / 2.0
        return y.clamp(0.0, 1.0)
