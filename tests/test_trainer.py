"""fit(): one batch overfits, seeds repeat exactly, resume equals an unbroken run, NaN guard."""

import json
import math

import pytest
import torch
from conftest import make_splits, tiny_config
from safetensors import safe_open

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


def test_resume_refuses_another_mean_activation_and_applies_a_new_fixed_sigma_x(
    splits, tmp_path, caplog
):
    config = tiny_config(epochs=1, likelihood="gaussian", sigma_x=0.1)
    fit(config, splits, on_epoch_end=lambda s: s.save(tmp_path / "c"))
    with pytest.raises(ConfigError) as err:
        fit(config.replace(epochs=2, mean_activation="squash"), splits, resume_from=tmp_path / "c")
    assert (
        "model.mean_activation: the checkpoint was trained with 'none', the config asks for "
        "'squash'" in str(err.value)
    )
    assert "set model.mean_activation back to 'none', or start a new run" in str(err.value)

    resumed = fit(config.replace(epochs=2, sigma_x=0.5), splits, resume_from=tmp_path / "c")
    # The loss reads the buffer: it now holds the config's 0.5, not the checkpoint's 0.1.
    assert resumed.model.sigma_x == pytest.approx(0.5)
    assert [r["sigma_x"] for r in resumed.history] == pytest.approx([0.1, 0.5])
    assert resumed.checkpoint().config.model.sigma_x == 0.5
    assert "model.sigma_x: the checkpoint was trained with 0.1, the config asks for 0.5" in (
        caplog.text
    )
    kept = fit(config.replace(epochs=2), splits, resume_from=tmp_path / "c")
    assert kept.model.sigma_x == pytest.approx(0.1)


def _as_written_on_a_gpu(path, tmp_path, marked):
    """The checkpoint at `path` as a CUDA run writes it, in a new file: its noise generator
    lived on the GPU, and a CUDA (Philox) generator's get_state() is 16 bytes, the seed then
    the offset as 64-bit integers (ATen's CUDAGeneratorImpl::get_state), where the CPU
    Mersenne Twister's is 5056. `marked`: the devices recorded, as vae-sweep writes them now;
    else the file as written before they were."""
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    assert tensors["rng.noise"].numel() == torch.Generator().get_state().numel() == 5056
    tensors["rng.noise"] = torch.tensor([1, 4 * 96], dtype=torch.int64).view(torch.uint8)
    assert json.loads(metadata.pop("rng_devices")) == {"shuffle": "cpu", "noise": "cpu"}
    if marked:
        metadata["rng_devices"] = json.dumps({"shuffle": "cpu", "noise": "cuda"})
    gpu = tmp_path / "gpu.safetensors"
    save_file(tensors, str(gpu), metadata=metadata)
    return gpu


@pytest.mark.parametrize("marked", [False, True], ids=["before-devices-kept", "device-kept"])
def test_a_checkpoint_written_on_a_gpu_resumes_on_cpu_reseeded(splits, tmp_path, caplog, marked):
    config = tiny_config(epochs=1)
    fit(config, splits, on_epoch_end=lambda s: s.save(tmp_path / "c"))
    gpu = _as_written_on_a_gpu(tmp_path / "c", tmp_path, marked)
    assert read_checkpoint(gpu).rng["noise"].numel() == 16
    a = fit(config.replace(epochs=3), splits, resume_from=gpu)
    assert a.epoch == 3 and [r["epoch"] for r in a.history] == [1, 2, 3]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_bpd"]) for r in a.history)
    assert (
        "the checkpoint's noise generator state was saved on cuda, this run is on cpu"
        in caplog.text
    )
    assert "reseeded from seed 0 and step 3" in caplog.text
    assert "shuffle generator" not in caplog.text  # a CPU generator on both: kept exactly
    b = fit(config.replace(epochs=3), splits, resume_from=gpu)  # the reseed is deterministic
    assert [r["val_bpd"] for r in b.history] == [r["val_bpd"] for r in a.history]
    unforged = fit(config.replace(epochs=3), splits, resume_from=tmp_path / "c")
    assert unforged.history[-1]["val_bpd"] != a.history[-1]["val_bpd"]  # other noise drawn
