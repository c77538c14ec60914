"""How much of a dataset's known generative factors a model's code holds (shapes has them).

From the posterior means z = E[z|x] of a split (its first half fits, its second half scores):

    shape_accuracy  linear probe: multinomial logistic regression z -> shape, test accuracy
    factor_r2       linear probe: ridge regression z -> each continuous factor, mean R^2 over
                    scale, x, y and hue (hue on the circle, as cos and sin)
    mig             mutual information gap (Chen et al. 2018), as in disentanglement_lib: per
                    factor, the gap between the two latents that share most information with it,
                    over the factor's entropy; mean over factors. Latents and continuous factors
                    in 20 equal-width bins.

Rotation is left out: a circle has none, a square repeats every 90 degrees, a triangle every 120,
so no code can be expected to hold it as one number.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vae_core.metrics import index_batches
from vae_core.model import VAE

SCORED = ("shape", "scale", "x", "y", "hue")
BINS = 20


@torch.no_grad()
def posterior_means(model: VAE, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """E[z|x] of uint8 images (N, C, H, W), (N, Z) float32 on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    means = [
        model.encode(model.coding.encode(images[b].to(device), dequantize=False)).mean.cpu()
        for b in index_batches(len(images), batch_size)
    ]
    model.train(was_training)
    return torch.cat(means)


def _standardise(fit: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = fit.mean(0), fit.std(0).clamp_min(1e-6)
    return (fit - mean) / std, (score - mean) / std


def probe_accuracy(
    z_fit: torch.Tensor, y_fit: torch.Tensor, z_score: torch.Tensor, y_score: torch.Tensor
) -> float:
    """Test accuracy of a multinomial logistic regression (L2 1e-3, L-BFGS) on the codes."""
    z_fit, z_score = _standardise(z_fit.double(), z_score.double())
    classes = int(max(y_fit.max(), y_score.max())) + 1
    weights = torch.zeros(z_fit.shape[1] + 1, classes, dtype=torch.float64, requires_grad=True)
    design = torch.cat([z_fit, torch.ones(len(z_fit), 1, dtype=torch.float64)], 1)
    optimiser = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.cross_entropy(design @ weights, y_fit.long())
        value = value + 1e-3 * weights[:-1].pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimiser.step(loss)
    scored = torch.cat([z_score, torch.ones(len(z_score), 1, dtype=torch.float64)], 1)
    predicted = (scored @ weights.detach()).argmax(1)
    return (predicted == y_score.long()).double().mean().item()


def probe_r2(
    z_fit: torch.Tensor, t_fit: torch.Tensor, z_score: torch.Tensor, t_score: torch.Tensor
) -> float:
    """Test R^2 of a ridge regression (lambda 1e-3 per sample) of targets (N, T) on the codes,
    averaged over the targets."""
    z_fit, z_score = _standardise(z_fit.double(), z_score.double())
    t_fit, t_score = t_fit.double(), t_score.double()
    offset = t_fit.mean(0)
    gram = z_fit.T @ z_fit + 1e-3 * len(z_fit) * torch.eye(z_fit.shape[1], dtype=torch.float64)
    beta = torch.linalg.solve(gram, z_fit.T @ (t_fit - offset))
    residual = (t_score - offset - z_score @ beta).pow(2).sum(0)
    total = (t_score - t_score.mean(0)).pow(2).sum(0).clamp_min(1e-12)
    return (1 - residual / total).mean().item()


def _bins(values: np.ndarray) -> np.ndarray:
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros(len(values), dtype=np.int64)
    return np.minimum(((values - low) / (high - low) * BINS).astype(np.int64), BINS - 1)


def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats of two integer codes, from their joint histogram."""
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    seen = joint > 0
    return float((joint[seen] * np.log(joint[seen] / outer[seen])).sum())


def mig(codes: torch.Tensor, factors: dict[str, np.ndarray]) -> float:
    """Mutual information gap of codes (N, Z) for discretised factors (name -> (N,) ints)."""
    latents = [_bins(codes[:, j].numpy()) for j in range(codes.shape[1])]
    gaps = []
    for values in factors.values():
        entropy = _mutual_information(values, values)  # I(v; v) = H(v)
        if entropy <= 0:
            continue
        shared = sorted((_mutual_information(z, values) for z in latents), reverse=True)
        gaps.append((shared[0] - (shared[1] if len(shared) > 1 else 0.0)) / entropy)
    return float(np.mean(gaps)) if gaps else math.nan


def factor_scores(model: VAE, images: torch.Tensor, factors: dict[str, torch.Tensor]) -> dict:
    """shape_accuracy, factor_r2 and mig of the model's codes of a split with known factors
    (SCORED; those the split lacks are skipped). Too few images (under 8) score nothing."""
    if len(images) < 8 or not any(name in factors for name in SCORED):
        return {}
    codes = posterior_means(model, images)
    half = len(codes) // 2
    fit, score = codes[:half], codes[half:]
    scores = {}
    if "shape" in factors:
        shape = factors["shape"]
        scores["shape_accuracy"] = probe_accuracy(fit, shape[:half], score, shape[half:])
    targets = [factors[k].double()[:, None] for k in ("scale", "x", "y") if k in factors]
    if "hue" in factors:
        angle = 2 * math.pi * factors["hue"].double()[:, None]
        targets += [torch.cos(angle), torch.sin(angle)]
    if targets:
        t = torch.cat(targets, 1)
        scores["factor_r2"] = probe_r2(fit, t[:half], score, t[half:])
    discrete = {
        k: (v.numpy().astype(np.int64) if k == "shape" else _bins(v.numpy()))
        for k, v in factors.items()
        if k in SCORED
    }
    scores["mig"] = mig(codes, discrete)
    return scores
