"""Every sweep script: its search space fits its base config, and --help explains."""

import importlib
import subprocess
import sys

import pytest
from conftest import REPO

from sweeps.engine import check_space
from vae_core import Config

SCRIPTS = ["shapes", "mnist", "fashion_mnist", "celeba"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_search_space_fits_the_base_config(name):
    module = importlib.import_module(f"sweeps.{name}")
    bases = [module.BASE_64, module.BASE_128] if name == "celeba" else [module.BASE_CONFIG]
    for base in bases:
        check_space(module.SEARCH_SPACE, Config.from_dict(base))
    assert {"latent_dim", "kl_weight", "sigma_x"} <= set(module.SEARCH_SPACE)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_names_the_flags(name):
    out = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / f"{name}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for flag in (
        "--num-samples",
        "--max-epochs",
        "--gpus-per-trial",
        "--cpus-per-trial",
        "--data-root",
        "--tracking-uri",
        "--registry-name",
        "--storage-path",
        "--name",
        "--resume",
        "--seed",
        "--smoke-test",
        "--time-budget",
        "--max-concurrent",
    ):
        assert flag in out.stdout, flag


def test_celeba_image_size_picks_the_base_model():
    from sweeps.celeba import BASE_64, BASE_128, base_config

    argv = ["--image-size", "128", "--num-samples", "4"]
    assert base_config(argv) is BASE_128 and argv == ["--num-samples", "4"]
    assert base_config([]) is BASE_64
    assert Config.from_dict(BASE_128).model.arch == "conv_bn"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-samples", "0"], "--num-samples: got 0; expected >= 1"),
        (["--max-epochs", "-2"], "--max-epochs: got -2; expected >= 1"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial: got 0.0; expected > 0"),
        (["--gpus-per-trial", "-1"], "--gpus-per-trial: got -1.0; expected >= 0"),
    ],
)
def test_bad_flags_are_refused_before_anything_starts(flags, message, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "sweeps" / "shapes.py"),
            *flags,
            "--storage-path",
            str(tmp_path / "ray"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and message in out.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()
