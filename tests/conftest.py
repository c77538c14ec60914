"""Shared fixtures: tiny configs, small generated image sets, the offline MNIST copy."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import subprocess
import tempfile
from contextlib import chdir, contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

from vae_core.config import Config
from vae_core.data import Split, Splits

# Prepared datasets go to a cache of this test session, never to ~/.cache (subprocesses too).
os.environ["VAE_CACHE_DIR"] = tempfile.mkdtemp(prefix="vae-sweep-test-cache-")
atexit.register(shutil.rmtree, os.environ["VAE_CACHE_DIR"], ignore_errors=True)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# What viz.write_all draws for a model with a 2-D latent space.
ALL_IMAGES = {
    "reconstructions.png",
    "samples.png",
    "interpolations.png",
    "latent_scatter.png",
    "nearest_neighbours.png",
    "manifold.png",
}


def rectangles(n: int, size: int = 28, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """n uint8 images (N, C, size, size): one bright rectangle each on a dark background,
    at a random place, of random extent and colour. Structured enough to learn quickly."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, channels, size, size, dtype=torch.uint8)
    for i in range(n):
        x0, y0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        w, h = torch.randint(size // 4, size // 2, (2,), generator=g).tolist()
        colour = torch.randint(128, 256, (channels, 1, 1), generator=g).to(torch.uint8)
        images[i, :, y0 : y0 + h, x0 : x0 + w] = colour
    return images


def make_splits(n: int = 96, size: int = 28, channels: int = 1, seed: int = 0) -> Splits:
    images = rectangles(n + n // 4 + n // 4, size, channels, seed)
    labels = torch.arange(len(images)) % 10
    a, b = n, n + n // 4
    return Splits(
        Split(images[:a], labels[:a]),
        Split(images[a:b], labels[a:b]),
        Split(images[b:], labels[b:]),
    )


def tiny_config(**changes) -> Config:
    """A config that trains in well under a second on CPU."""
    values = {
        "arch": "mlp",
        "hidden_dims": [64],
        "latent_dim": 4,
        "epochs": 2,
        "batch_size": 32,
        "device": "cpu",
        "iwae_samples": 4,
    }
    values.update(changes)
    return Config.from_dict(values)


@pytest.fixture
def splits() -> Splits:
    return make_splits()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(
            f"the offline MNIST copy is not at {SHARED_DATA} (../shared/data beside the checkout)"
        )
    return SHARED_DATA


@contextmanager
def small_disk(folder, size: str):
    """A tmpfs of `size` mounted at `folder` (needs root and mount rights; skips otherwise)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def in_process(main, *args, cwd=None) -> subprocess.CompletedProcess:
    """A console script's `main(argv)` run in this process, as a CompletedProcess with its
    exit status and output: a new Python per call costs ~2.5 s of torch imports. Each tool
    keeps one test through its real console script."""
    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in args]
    with chdir(cwd or Path.cwd()), redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv) or 0
        except SystemExit as exited:
            code = exited.code if isinstance(exited.code, int) else 1
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL for the module (tests/servers.py): its URI, without a database."""
    from servers import postgres_server

    with postgres_server() as uri:
        yield uri


def migrated_store(path: Path) -> str:
    """A real MLflow SQLite store at `path`, already migrated: a copy of one the session made
    once (creating MLflow's tables costs ~3 s per new store). Returns its URI."""
    template = Path(os.environ["VAE_CACHE_DIR"]) / "mlflow-template.db"
    if not template.exists():
        from mlflow.tracking import MlflowClient

        MlflowClient(f"sqlite:///{template}").search_experiments()
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"
