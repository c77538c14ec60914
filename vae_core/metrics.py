"""Losses and beta-free metrics, as free functions of a model and a batch.

For an image x of D = C * H * W pixels, with z ~ q(z|x) (one reparameterised sample):

    train_loss = -log p(x|z) + beta * KL(q(z|x) || N(0, I))      (summed over D and Z)
    nelbo      = -log p(x|z) + KL + D * log(256 / a)              (beta = 1, 8-bit scale)
    bpd        = nelbo / (D * ln 2)

where x is uniformly dequantised for Gaussian likelihoods and a is the model's pixel scale
(1 for [0, 1], 2 for [-1, 1]); see PixelCoding.log_det_per_dim. Bernoulli models binarised
pixels and needs no correction. Since beta and sigma_x do not enter nelbo except through the
fitted model, trials with different values compare on val_bpd; train_loss never does.

    val_mse      = mean over pixels of (E[x|z = E[z|x]] - x)^2 on the [0, 1] scale
    val_bpd_calibrated (Gaussian decoders) = val_bpd with the shared sigma set to its optimum
                   on the split, sigma*^2 = mean over pixels of (x - E[x|z])^2 in model space
                   (the calibrated decoder of sigma-VAE, Rybkin et al. 2021): the same bound
                   for every sigma_x a trial trained with, so sigma_x is judged only by the
                   encoder and decoder it led to. -log p(x|z) per image is then
                   D/2 * (1 + log(2 pi sigma*^2)).
    effective_beta = beta * sigma^2 (model space): with a Gaussian decoder the training loss is
                   ||x - mu||^2 / (2 sigma^2) + beta KL, which is sigma^-2 times
                   ||x - mu||^2 / 2 + beta sigma^2 KL; Adam, nearly scale-free, sees beta and
                   sigma_x only through this product (for a learned sigma at its current value).
    val_kl       = KL(q(z|x) || N(0, I)), the rate, nats per image
    active_units = #{j : Cov_x(E[z_j|x]) > 0.01}     (Burda, Grosse & Salakhutdinov, 2016)
    iwae_nll     = -log (1/k) sum_i p(x, z_i) / q(z_i|x),  z_i ~ q(z|x)   (same paper), an
                   upper bound on -log p(x) that tightens as k grows; 8-bit scale, nats.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from vae_core.likelihoods import standard_normal_log_prob
from vae_core.model import VAE

LN2 = math.log(2.0)
ACTIVE_UNIT_THRESHOLD = 0.01


def elbo_terms(
    model: VAE,
    x: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x|z), KL) for model-space x, each of shape (B,) in nats."""
    posterior, _, px_z = model(x, generator)
    return px_z.log_prob(x), posterior.kl()


def training_loss(log_px: torch.Tensor, kl: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over images of -log p(x|z) + beta * KL (each summed over its dimensions)."""
    return (-log_px + beta * kl).mean()


def to_bpd(nats_per_image: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    return nats_per_image / (dims * LN2)


def index_batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@torch.no_grad()
def evaluate(
    model: VAE, images: torch.Tensor, batch_size: int = 500, seed: int = 0, prefix: str = "val_"
) -> dict[str, float]:
    """Beta-free metrics of `images` (uint8, (N, C, H, W)); deterministic for a given seed.

    The dequantisation noise and the posterior sample come from a generator seeded with
    `seed`, so every trial is scored on the same noise.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    coding = model.coding
    generator = torch.Generator(device).manual_seed(seed)
    dims = math.prod(images.shape[1:])
    gaussian = coding.likelihood != "bernoulli"
    nelbo = kl_sum = sq_err = sq_residual = 0.0
    means = []
    for batch in index_batches(len(images), batch_size):
        pixels = images[batch].to(device)  # uint8, moved once
        x = coding.encode(pixels, generator)
        posterior, z, px_z = model(x, generator)
        kl = posterior.kl()
        nelbo += (-px_z.log_prob(x) + kl).sum().item()
        kl_sum += kl.sum().item()
        if gaussian:  # model-space residuals of the bound's own sample: the calibrated sigma
            sq_residual += (x - px_z.mean).pow(2).sum().item()
        target = coding.to_unit(coding.encode(pixels, dequantize=False))
        recon = coding.to_unit(model.decode(posterior.mode()).mean)
        sq_err += (recon - target).pow(2).sum().item()
        means.append(posterior.mean)
    model.train(was_training)
    n = len(images)
    nelbo = nelbo / n + dims * coding.log_det_per_dim
    metrics = {
        f"{prefix}bpd": to_bpd(nelbo, dims),
        f"{prefix}nelbo": nelbo,
        f"{prefix}mse": sq_err / (n * dims),
        f"{prefix}kl": kl_sum / n,
        "active_units": active_units(torch.cat(means)),
    }
    if gaussian:
        variance = max(sq_residual / (n * dims), 1e-12)
        calibrated = dims / 2 * (1 + math.log(2 * math.pi * variance)) + kl_sum / n
        metrics[f"{prefix}bpd_calibrated"] = to_bpd(
            calibrated + dims * coding.log_det_per_dim, dims
        )
    return metrics


def effective_beta(model: VAE, beta: float) -> float | None:
    """beta * sigma^2 in the model's pixel space, what training sees of beta and sigma_x
    (None for a Bernoulli decoder, which has no sigma)."""
    if not hasattr(model, "log_sigma_x"):
        return None
    return beta * math.exp(2 * model.log_sigma_x.item())


def active_units(
    posterior_means: torch.Tensor,
    threshold: float = ACTIVE_UNIT_THRESHOLD,
) -> int:
    """Latent dimensions whose posterior mean varies across the data: Cov_x(E[z|x]) > 0.01."""
    if len(posterior_means) < 2:
        return 0
    return int((posterior_means.float().var(dim=0) > threshold).sum().item())


@torch.no_grad()
def iwae_nll(
    model: VAE,
    images: torch.Tensor,
    k: int,
    seed: int = 0,
    decodes_per_batch: int = 2048,
    progress: bool = False,
) -> float:
    """Importance-weighted NLL estimate with k samples, nats per image on the 8-bit scale.

    -log p(x) ~= -(logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k)
    The k samples of a batch are decoded together, about `decodes_per_batch` at a time.
    progress: a tqdm bar over the images on stderr (k decodes each: the slow part of the end).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    dims = math.prod(images.shape[1:])
    total = 0.0
    bar = tqdm(
        total=len(images), unit="img", desc=f"test IWAE bound (k={k})", disable=not progress
    )
    for batch in index_batches(len(images), max(1, decodes_per_batch // k)):
        x = model.coding.encode(images[batch].to(device), generator)  # (B, C, H, W)
        posterior = model.encode(x)
        z = torch.stack([posterior.sample(generator) for _ in range(k)])  # (k, B, Z)
        px_z = model.decode(z.flatten(0, 1))  # over (k * B) images
        log_px_z = px_z.log_prob(x.repeat(k, 1, 1, 1)).view(k, -1)  # (k, B)
        log_w = log_px_z + standard_normal_log_prob(z) - posterior.log_prob(z)
        log_px = torch.logsumexp(log_w, dim=0) - math.log(k)  # (B,)
        total += (-log_px).sum().item()
        bar.update(batch.stop - batch.start)
    bar.close()
    model.train(was_training)
    return total / len(images) + dims * model.coding.log_det_per_dim


def final_metrics(
    model: VAE, images: torch.Tensor, k: int, seed: int = 0, progress: bool = False
) -> dict[str, float]:
    """The final evaluation of a trained model: test_bpd and test_iwae_nll with its k
    (`progress`: a bar over the IWAE bound)."""
    metrics = evaluate(model, images, seed=seed, prefix="test_")
    metrics["test_iwae_nll"] = iwae_nll(model, images, k, seed=seed, progress=progress)
    metrics["test_iwae_bpd"] = to_bpd(metrics["test_iwae_nll"], math.prod(images.shape[1:]))
    metrics["iwae_k"] = k
    metrics["test_active_units"] = metrics.pop("active_units")
    return metrics
