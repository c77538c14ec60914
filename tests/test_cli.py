"""`vae-train` end to end on a real MNIST subset, resume, YAML + flags, and its errors."""

import json
import shutil
import subprocess

import pytest
from conftest import ALL_IMAGES, in_process

from vae_core.checkpoint import load_model, read_checkpoint
from vae_core.cli import train

EPOCH_KEYS = {"epoch", "train_loss", "val_bpd", "val_nelbo", "val_mse", "val_kl", "active_units"}


def console_vae_train(*args, cwd=None):
    """The installed console script, as a user types it."""
    exe = shutil.which("vae-train")
    assert exe, "vae-train is not on PATH: install the package with pip install -e ."
    return subprocess.run(
        [exe, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def vae_train(*args, cwd=None):
    return in_process(train.main, *args, cwd=cwd)


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = console_vae_train(
        "--dataset",
        "mnist",
        "--data-root",
        shared_data,
        "--limit",
        600,
        "--epochs",
        2,
        "--latent-dim",
        2,
        "--batch-size",
        64,
        "--iwae-samples",
        4,
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    return out, result, shared_data


def test_writes_metrics_checkpoint_and_images(run):
    out, result, _ = run
    history = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert EPOCH_KEYS <= set(history[0])
    assert history[1]["val_bpd"] < history[0]["val_bpd"]
    test = json.loads((out / "test_metrics.json").read_text())
    assert {"test_bpd", "test_iwae_nll", "iwae_k"} <= set(test) and test["iwae_k"] == 4
    assert {p.name for p in (out / "images").iterdir()} == ALL_IMAGES
    assert load_model(out).latent_dim == 2
    assert "epoch 1/2" in result.stderr  # the per-epoch progress bar
    assert "val_bpd" in result.stderr and str(out) in result.stderr


def test_resume_continues_to_more_epochs(run, tmp_path):
    out, _, shared = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    result = vae_train(
        "--out", copy, "--resume", "--epochs", 3, "--data-root", shared, "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    history = json.loads((copy / "metrics.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert read_checkpoint(copy).config.model.latent_dim == 2  # taken from the checkpoint


def test_existing_run_is_not_overwritten(run):
    out, _, shared = run
    before = (out / "checkpoint.safetensors").read_bytes()
    result = vae_train("--out", out, "--data-root", shared, "--limit", 600)
    assert result.returncode == 2
    assert "already holds a checkpoint: pass --resume" in result.stderr
    assert (out / "checkpoint.safetensors").read_bytes() == before


def test_yaml_file_with_flags_on_top(shared_data, tmp_path):
    (tmp_path / "run.yaml").write_text(
        "model:\n  arch: mlp\n  latent_dim: 3\n  hidden_dims: [32]\n"
        f"data:\n  data_root: {shared_data}\n  limit: 200\n"
        "train:\n  epochs: 1\n  lr: 1e-3\n  iwae_samples: 2\n"
    )
    result = vae_train(
        "--config",
        tmp_path / "run.yaml",
        "--latent-dim",
        5,
        "--out",
        tmp_path / "out",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    config = read_checkpoint(tmp_path / "out").config
    assert (config.model.arch, config.model.latent_dim, config.train.lr) == ("mlp", 5, 1e-3)


def test_missing_dataset_fails_before_any_output(tmp_path):
    result = vae_train("--data-root", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "dataset 'mnist' not found" in result.stderr and "--download" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--latent-dim", "0"], "model.latent_dim: got 0; expected an integer >= 1"),
        (["--sigma-x", "-1"], "model.sigma_x: got -1.0; expected a number > 0"),
        (["--arch", "conv_bn"], "data.image_size: got 28; the conv_bn architecture"),
        (["--latent-dim", "two"], "argument --latent-dim: invalid int value: 'two'"),
    ],
)
def test_bad_flags_exit_2_with_the_field_named(flags, message, tmp_path):
    result = vae_train(*flags, "--out", tmp_path / "out")
    assert result.returncode == 2 and message in result.stderr


def test_resume_refuses_another_mean_activation_and_applies_a_new_sigma_x(
    shared_data, tmp_path, caplog
):
    out = tmp_path / "run"
    tiny = ["--arch", "mlp", "--hidden-dims", 32, "--latent-dim", 2, "--iwae-samples", 2]
    first = vae_train(
        "--data-root", shared_data, "--limit", 200, *tiny, "--epochs", 1, "--out", out,
        "--no-progress",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert read_checkpoint(out).config.model.sigma_x == 0.1  # the default, fixed Gaussian
    before = (out / "checkpoint.safetensors").read_bytes()
    refused = vae_train(
        "--out", out, "--resume", "--epochs", 2, "--mean-activation", "squash", "--no-progress"
    )
    assert refused.returncode == 2
    assert (
        "vae-train: error: model.mean_activation: the checkpoint was trained with 'none', the "
        "config asks for 'squash'; a run resumes only with the same model and data: set "
        "model.mean_activation back to 'none', or start a new run" in refused.stderr
    )
    assert (out / "checkpoint.safetensors").read_bytes() == before

    applied = vae_train("--out", out, "--resume", "--epochs", 2, "--sigma-x", 0.5, "--no-progress")
    assert applied.returncode == 0, applied.stderr
    assert "model.sigma_x: the checkpoint was trained with 0.1, the config asks for 0.5" in (
        caplog.text
    )
    history = json.loads((out / "metrics.json").read_text())
    assert [r["sigma_x"] for r in history] == pytest.approx([0.1, 0.5])
    ckpt = read_checkpoint(out)
    assert ckpt.config.model.sigma_x == 0.5 and load_model(out).sigma_x == pytest.approx(0.5)
