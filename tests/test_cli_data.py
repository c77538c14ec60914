"""`vae-data prepare` / `info`, and `vae-train` on a prepared file and on built-in shapes."""

import json
import shutil
import subprocess

import pytest
from conftest import in_process
from fakes import make_celeba_folder

from vae_core.checkpoint import read_checkpoint
from vae_core.cli import data, train


def console(tool, *args):
    """The installed console script, as a user types it."""
    exe = shutil.which(tool)
    assert exe, f"{tool} is not on PATH: install the package with pip install -e ."
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=600)


def run(tool, *args):
    return in_process({"vae-data": data.main, "vae-train": train.main}[tool], *args)


def test_prepare_then_info_then_train_on_the_file(tmp_path):
    make_celeba_folder(tmp_path / "src", 120)
    out = tmp_path / "celeba32.arrow"
    prepared = console(
        "vae-data",
        "prepare",
        "celeba",
        "--root",
        tmp_path / "src",
        "--size",
        32,
        "--crop",
        "tight",
        "--out",
        out,
    )
    assert prepared.returncode == 0, prepared.stderr
    assert "decoding celeba" in prepared.stderr  # the progress bar
    assert "skipped 1 unreadable file(s) of 120: 000001.jpg" in prepared.stderr
    assert "119 x 3x32x32 uint8" in prepared.stdout

    info = run("vae-data", "info", out)
    assert info.returncode == 0 and "splits     train 95, val 12, test 12" in info.stdout
    meta = json.loads(run("vae-data", "info", out, "--json").stdout)
    assert meta["options"] == {"crop": "tight"} and meta["count"] == 119

    trained = run(
        "vae-train",
        "--dataset",
        "celeba",
        "--image-size",
        32,
        "--data-path",
        out,
        "--epochs",
        1,
        "--latent-dim",
        4,
        "--iwae-samples",
        2,
        "--no-progress",
        "--out",
        tmp_path / "run",
    )
    assert trained.returncode == 0, trained.stderr
    assert "95 train / 12 val / 12 test images of celeba" in trained.stderr
    assert read_checkpoint(tmp_path / "run").config.data.data_path == str(out)


def test_train_on_the_built_in_shapes(tmp_path):
    trained = run(
        "vae-train",
        "--dataset",
        "shapes",
        "--limit",
        200,
        "--epochs",
        1,
        "--iwae-samples",
        2,
        "--no-progress",
        "--out",
        tmp_path / "run",
    )
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "run" / "images" / "reconstructions.png").is_file()


def test_train_refuses_a_file_of_another_size(tmp_path):
    out = tmp_path / "s.arrow"
    assert (
        run(
            "vae-data",
            "prepare",
            "shapes",
            "--size",
            32,
            "--limit",
            20,
            "--out",
            out,
            "--no-progress",
        ).returncode
        == 0
    )
    result = run("vae-train", "--dataset", "shapes", "--data-path", out, "--out", tmp_path / "r")
    assert result.returncode == 2
    assert "holds size 32, the config asks for 64; pass --image-size 32" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["prepare", "celeba", "--root", "{tmp}", "--out", "{tmp}/x.arrow"],
            "dataset 'celeba' not found under",
        ),
        (
            ["prepare", "image_folder", "--root", "{tmp}/missing", "--out", "{tmp}/x.arrow"],
            "is not a folder",
        ),
        (
            ["prepare", "shapes", "--size", "0", "--out", "{tmp}/x.arrow"],
            "data.image_size: got 0; expected an integer >= 1",
        ),
        (["prepare", "cifar", "--out", "{tmp}/x.arrow"], "invalid choice: 'cifar'"),
        (["info", "{tmp}/absent.arrow"], "absent.arrow: no such file"),
    ],
)
def test_errors_name_what_is_wrong(args, message, tmp_path):
    result = run("vae-data", *(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "x.arrow").exists()
