"""fit(): one batch overfits, seeds repeat exactly, resume equals an unbroken run, NaN guard."""

import math

import pytest
import torch
from conftest import make_splits, tiny_config

from vae_core.checkpoint import read_checkpoint
from vae_core.config import ConfigError
from vae_core.data import Split, Splits
from vae_core.trainer import DivergenceError, fit


def _weights(state):
    return {k: v.clone() for k, v in state.model.state_dict().items()}


def test_one_batch_overfits():
    batch = make_splits(16).train
    one_batch = Splits(batch, batch, batch)
    config = tiny_config(
        arch="mlp",
        hidden_dims=[256],
        latent_dim=8,
        batch_size=16,
        epochs=300,
        lr=3e-3,
        kl_weight=0.01,
        likelihood="gaussian_learned",
    )
    history = fit(config, one_batch).history
    first, last = history[0], history[-1]
    assert last["val_mse"] < 0.1 * first["val_mse"]
    assert last["val_mse"] < 0.005
    assert last["val_bpd"] < first["val_bpd"] - 3


def test_same_seed_same_numbers_on_cpu(splits):
    config = tiny_config(arch="conv", epochs=2)
    a, b = fit(config, splits), fit(config, splits)
    assert a.history[-1] | {"epoch_seconds": 0} == b.history[-1] | {"epoch_seconds": 0}
    for (name, wa), wb in zip(_weights(a).items(), _weights(b).values(), strict=True):
        assert torch.equal(wa, wb), name
    c = fit(config.replace(seed=1), splits)
    assert c.history[-1]["val_bpd"] != a.history[-1]["val_bpd"]


@pytest.mark.parametrize("arch", ["mlp", "conv_bn"])
def test_resumed_run_equals_an_unbroken_one(arch, tmp_path):
    size = {"image_size": 32, "widths": [4, 8, 8]} if arch == "conv_bn" else {}
    config = tiny_config(arch=arch, epochs=3, likelihood="gaussian_learned", **size)
    data = make_splits(size=config.image_size)
    unbroken = fit(config, data)
    first = fit(
        config.replace(epochs=1),
        data,
        on_epoch_end=lambda s: s.save(tmp_path / "ckpt.safetensors"),
    )
    resumed = fit(config, data, resume_from=tmp_path / "ckpt.safetensors")
    assert first.epoch == 1 and resumed.epoch == 3 and resumed.step == unbroken.step
    assert [r["val_bpd"] for r in resumed.history] == [r["val_bpd"] for r in unbroken.history]
    for (name, wa), wb in zip(_weights(unbroken).items(), _weights(resumed).values(), strict=True):
        assert torch.equal(wa, wb), name


def test_callback_sees_each_epoch_and_can_stop(splits):
    seen = []

    def on_epoch_end(state):
        seen.append(dict(state.history[-1]))
        return state.epoch == 2

    state = fit(tiny_config(epochs=5), splits, on_epoch_end=on_epoch_end)
    assert [r["epoch"] for r in seen] == [1, 2] and state.epoch == 2
    expected = {
        "epoch",
        "step",
        "train_loss",
        "val_bpd",
        "val_nelbo",
        "val_mse",
        "val_kl",
        "active_units",
        "beta",
        "sigma_x",
        "epoch_seconds",
    }
    assert expected <= set(seen[0])
    assert all(math.isfinite(seen[-1][k]) for k in expected)


def test_divergence_stops_with_the_config_and_the_step(splits, tmp_path):
    config = tiny_config(epochs=2, latent_dim=3, kl_weight=2.5)
    fit(config.replace(epochs=1), splits, on_epoch_end=lambda s: s.save(tmp_path / "c"))
    ckpt = read_checkpoint(tmp_path / "c")
    name = next(k for k in ckpt.model_state if k.endswith("weight"))
    ckpt.model_state[name][0, 0] = float("nan")  # a weight gone bad, as after an overflow
    with pytest.raises(DivergenceError) as err:
        fit(config, splits, resume_from=ckpt)
    message = str(err.value)
    assert "diverged at epoch 2, step 4: loss=nan" in message
    assert "latent_dim=3" in message and "kl_weight=2.5" in message


def test_unlabelled_data_and_tiny_splits_train():
    splits = make_splits(size=32)
    unlabelled = Splits(
        *(Split(s.images[:9], None) for s in (splits.train, splits.val, splits.test))
    )
    state = fit(
        tiny_config(arch="conv_bn", image_size=32, widths=[4, 8, 8], batch_size=4), unlabelled
    )
    assert state.step == 2 * 2  # 9 images in batches of 4: 4, 5 (a lone image is folded in)


def test_data_that_does_not_fit_the_config_is_refused_before_training(splits):
    with pytest.raises(
        ValueError,
        match=r"data.train: images are torch.uint8 \(1, 28, 28\), "
        r"the config expects uint8 \(1, 32, 32\)",
    ):
        fit(tiny_config(image_size=32), splits)


def test_resume_takes_a_new_lr_and_refuses_a_different_model(splits, tmp_path):
    config = tiny_config(epochs=1)
    fit(config, splits, on_epoch_end=lambda s: s.save(tmp_path / "c"))
    resumed = fit(config.replace(epochs=2, lr=1e-5), splits, resume_from=tmp_path / "c")
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [1e-5]
    with pytest.raises(
        ConfigError,
        match="model.latent_dim: the checkpoint was trained with 4, the config asks for 5",
    ):
        fit(config.replace(epochs=2, latent_dim=5), splits, resume_from=tmp_path / "c")
