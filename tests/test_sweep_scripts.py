"""Every sweep script: its search space fits its base config, and --help explains."""

import importlib
import runpy
import sys

import pytest
from conftest import REPO

from sweeps.space import check_space
from sweeps.spec import build_parser, parse_spec
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
def test_help_names_the_flags(name, monkeypatch, capsys):
    script = REPO / "sweeps" / f"{name}.py"  # run as a file, the way `ray submit` runs it
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr()
    assert exited.value.code == 0, out.err
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
        *(["--image-size"] if name == "celeba" else []),
    ):
        assert flag in out.out, flag


def test_celeba_image_size_picks_the_base_model(tmp_path):
    from sweeps import celeba

    def spec(*flags):
        parser = build_parser("", {}, celeba.add_flags)
        argv = ["--data-root", str(tmp_path), "--tracking-uri", "sqlite:///x.db", *flags]
        return parse_spec(celeba.SEARCH_SPACE, celeba.base_config, argv, parser=parser)

    assert spec("--image-size=128").base.model.arch == "conv_bn"
    assert spec("--image-size", "128").base.image_size == 128
    assert spec().base.image_size == 64 and spec().base.model.arch == "conv"
    with pytest.raises(SystemExit):
        spec("--image-size", "50")  # argparse: invalid choice, exit 2
