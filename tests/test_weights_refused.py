"""`vae-sweep sample`, `reconstruct` and `encode` refuse a registered version whose weights file
was changed after registration, as `pull`, load_model and the pyfunc form do
(tests/test_bad_input.py): exit 2, the version and both hashes named, no output written. The
store is a real MLflow SQLite store; the changed file is another trained model's (valid
weights, other numbers), so only the hash can tell.
"""

import shutil
from pathlib import Path

import pytest
from conftest import in_process, make_splits, migrated_store, rectangles, tiny_config
from mlflow.tracking import MlflowClient
from PIL import Image

from sweeps import cli
from sweeps.registry import KEY, WEIGHTS_SHA256, log_and_register
from vae_core import fit
from vae_core.checkpoint import CHECKPOINT_NAME, file_sha256

MNIST_KEY = "mnist/28px/1ch/center/all/val0.1/continuous"
COMMANDS = {
    "sample": ["-n", "4", "--out", "{out}/s.png"],
    "reconstruct": ["--images", "{images}", "--out", "{out}/r.png"],
    "encode": ["--images", "{images}", "--out", "{out}/z.parquet"],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store holding version 1 of `m` (champion), the path of its weights file in the
    artifact store, another model's weights and a folder of 28 px images."""
    folder = tmp_path_factory.mktemp("store")
    uri = migrated_store(folder / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(folder / "art").as_uri())
    files = []
    for seed in (1, 2):
        path = folder / f"trained{seed}" / CHECKPOINT_NAME
        fit(tiny_config(epochs=1, seed=seed), make_splits()).save(path)
        files.append(path)
    run_id = client.create_run(experiment).info.run_id
    tags = {KEY: MNIST_KEY, "val_bpd": "5.0", "sweep_run_id": run_id}
    log_and_register(uri, run_id, files[0], "m", tags)
    client.set_terminated(run_id)
    source = client.get_model_version_download_uri("m", "1").removeprefix("file://")
    (stored,) = Path(source).rglob(CHECKPOINT_NAME)  # the version's own file, in its store
    images = folder / "images"
    images.mkdir()
    for i, image in enumerate(rectangles(3)):
        Image.fromarray(image[0].numpy()).save(images / f"{i}.png")
    return uri, stored, files, images


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_refuses_weights_changed_after_registration(store, tmp_path, command):
    uri, stored, (registered_file, other_file), images = store
    registered = MlflowClient(uri).get_model_version("m", "1").tags[WEIGHTS_SHA256]
    assert registered == file_sha256(stored) == file_sha256(registered_file)

    def vae_sweep(out: Path):
        out.mkdir()
        args = [a.format(out=out, images=images) for a in COMMANDS[command]]
        return in_process(cli.main, command, "m", *args, "--tracking-uri", uri)

    intact = vae_sweep(tmp_path / "intact")  # the command works on the registered weights
    assert intact.returncode == 0, intact.stderr[-2000:]
    assert len(list((tmp_path / "intact").iterdir())) == 1

    shutil.copyfile(other_file, stored)
    try:
        result = vae_sweep(tmp_path / "changed")
    finally:
        shutil.copyfile(registered_file, stored)
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        f"m/1: its weights file {CHECKPOINT_NAME} has sha256 {file_sha256(other_file)}, the "
        f"version was registered with sha256 {registered} (tag {WEIGHTS_SHA256}): the weights "
        "were changed after registration, refused" in result.stderr
    ), result.stderr[-2000:]
    assert list((tmp_path / "changed").iterdir()) == []  # no output, nor a temporary file
