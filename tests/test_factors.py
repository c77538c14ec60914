"""Factor scores (vae_core.factors) on codes whose answer is known, and per epoch on shapes."""

import numpy as np
import pytest
import torch

from vae_core import Config, fit, load_splits
from vae_core.factors import mig, probe_accuracy, probe_r2


def test_a_linear_probe_reads_a_factor_the_code_holds_and_not_one_it_lacks():
    g = torch.Generator().manual_seed(0)
    shape = torch.randint(0, 4, (2000,), generator=g)
    held = torch.nn.functional.one_hot(shape, 4).float() + 0.1 * torch.randn(2000, 4, generator=g)
    noise = torch.randn(2000, 4, generator=g)
    assert probe_accuracy(held[:1000], shape[:1000], held[1000:], shape[1000:]) > 0.99
    chance = probe_accuracy(noise[:1000], shape[:1000], noise[1000:], shape[1000:])
    assert 0.15 < chance < 0.35
    target = held @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    assert probe_r2(held[:1000], target[:1000], held[1000:], target[1000:]) > 0.999
    assert probe_r2(noise[:1000], target[:1000], noise[1000:], target[1000:]) < 0.05


def test_mig_is_high_for_one_latent_per_factor_and_low_when_two_share_it():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 20, 5000), rng.integers(0, 20, 5000)
    factors = {"a": a, "b": b}
    separate = torch.tensor(np.stack([a, b, rng.normal(size=5000)], 1), dtype=torch.float32)
    shared = torch.tensor(np.stack([a, a, b, b], 1), dtype=torch.float32)  # each factor twice
    assert mig(separate, factors) > 0.9
    assert mig(shared, factors) == pytest.approx(0.0, abs=1e-9)


def test_a_shapes_run_logs_its_factor_scores_each_epoch():
    config = Config.from_dict(
        {"dataset": "shapes", "image_size": 32, "arch": "mlp", "hidden_dims": [64],
         "latent_dim": 4, "limit": 400, "epochs": 1, "batch_size": 64}
    )  # fmt: skip
    state = fit(config, load_splits(config, progress=False))
    record = state.history[-1]
    assert 0 <= record["val_shape_accuracy"] <= 1 and 0 <= record["val_mig"] <= 1
    assert record["val_factor_r2"] <= 1
