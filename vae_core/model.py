"""The VAE: encode to a posterior, reparameterise, decode to a pixel distribution.

Vocabulary of pytorch/examples' vae/main.py (`encode` / `reparameterize` / `decode`); like
diffusers' AutoencoderKL, the encoder returns a distribution object and the model never
computes a loss: vae_core.metrics does, from what `forward` returns.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vae_core.architectures import build_networks
from vae_core.config import Config
from vae_core.likelihoods import (
    DiagonalGaussian,
    PixelBernoulli,
    PixelCoding,
    PixelDistribution,
    PixelGaussian,
)

# Soft upper bound on the posterior log-variance: a variance above e^4 (55x the prior's) is no
# use to any posterior, and without the bound Adam's first steps can push a wide linear head
# (conv_bn's 8192 features) to logvar ~ 20, whose KL of ~1e8 nats wrecks the run.
LOGVAR_MAX = 4.0


class VAE(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        m = config.model
        self.latent_dim = m.latent_dim
        self.image_shape = (config.channels, config.image_size, config.image_size)
        self.crop = config.data.crop  # how its images were cut square (new images the same)
        self.coding = PixelCoding(m.likelihood, config.data.pixel_range, config.data.binarize)
        self.squash = m.mean_activation == "squash"
        self.encoder, self.decoder = build_networks(
            m.arch,
            config.channels,
            config.image_size,
            m.latent_dim,
            m.activation,
            m.hidden_dims,
            m.widths,
            m.init,
            m.refine,
        )
        if m.likelihood != "bernoulli":
            # sigma_x is given on the [0, 1] scale; the model works in its own pixel range.
            log_sigma = torch.tensor(math.log(m.sigma_x * self.coding.scale))
            if m.likelihood == "gaussian_learned":
                self.log_sigma_x = nn.Parameter(log_sigma)
            else:
                self.register_buffer("log_sigma_x", log_sigma)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        mean, raw = self.encoder(x).float().chunk(2, dim=-1)  # (B, Z) each
        return DiagonalGaussian(mean, LOGVAR_MAX - F.softplus(LOGVAR_MAX - raw))

    def reparameterize(
        self, posterior: DiagonalGaussian, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return posterior.sample(generator)

    def decode(self, z: torch.Tensor) -> PixelDistribution:
        out = self.decoder(z).float()  # (B, C, H, W); float32 even under bf16 autocast
        if self.coding.likelihood == "bernoulli":
            return PixelBernoulli(out)
        if self.squash:
            out = torch.tanh(out) if self.coding.pixel_range == "signed" else torch.sigmoid(out)
        return PixelGaussian(out, self.log_sigma_x)

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[DiagonalGaussian, torch.Tensor, PixelDistribution]:
        posterior = self.encode(x)
        z = self.reparameterize(posterior, generator)
        return posterior, z, self.decode(z)

    @property
    def sigma_x(self) -> float | None:
        """Decoder noise std on the [0, 1] pixel scale (None for Bernoulli)."""
        if not hasattr(self, "log_sigma_x"):
            return None
        return math.exp(self.log_sigma_x.item()) / self.coding.scale

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n decoder means for z ~ N(0, I), as (n, C, H, W) images in [0, 1]."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.coding.to_unit(self.decode(z).mean)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder means at the posterior means of model-space x, as [0, 1] images."""
        return self.coding.to_unit(self.decode(self.encode(x).mode()).mean)


def build_model(config: Config) -> VAE:
    return VAE(config)
