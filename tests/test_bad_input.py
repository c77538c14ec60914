"""Bad input, table-driven: every case exits non-zero with a message that names the input and
what is accepted, starts no trial, and leaves the runs and registry entries already in the
store exactly as they were. The store is a real MLflow SQLite store holding a registered model.
"""

import os
import pickle
import shutil
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import ray
from conftest import in_process, make_splits, migrated_store, tiny_config
from mlflow.tracking import MlflowClient
from PIL import Image
from ray import tune
from record import record

from sweeps import cli
from sweeps.engine import main
from sweeps.lifecycle import SweepRuns
from sweeps.registry import (
    KEY,
    WEIGHTS_SHA256,
    WeightsChangedError,
    load_model,
    log_and_register,
    using_tracking_uri,
)
from sweeps.spec import parse_spec
from vae_core import Config, fit
from vae_core.checkpoint import CHECKPOINT_NAME, file_sha256
from vae_core.data.arrow import write_plan
from vae_core.data.cache import make_plan

SHAPES = {"dataset": "shapes", "arch": "conv", "batch_size": 64}
GOOD_SPACE = '{"latent_dim": tune.choice([4, 8])}'
EMPTY_FOLDER = {"dataset": "image_folder", "data_root": "{empty}"}  # no image: fails if read
DEFAULTS = {"num_samples": 2, "max_epochs": 1}
MNIST_KEY = "mnist/28px/1ch/center/all/val0.1/continuous"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An MLflow store with a run and a registered model `m` (version 1, champion), and the
    parent run of an image-folder sweep `old` (started with DEFAULTS and GOOD_SPACE, ended
    before Tune saved anything)."""
    folder = tmp_path_factory.mktemp("store")
    uri = migrated_store(folder / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(folder / "art").as_uri())
    checkpoint = folder / "checkpoint.safetensors"
    fit(tiny_config(epochs=1), make_splits()).save(checkpoint)
    run_id = client.create_run(experiment).info.run_id
    tags = {KEY: MNIST_KEY, "val_bpd": "5.0", "test_bpd": "5.0", "sweep_run_id": run_id}
    log_and_register(uri, run_id, checkpoint, "m", tags)
    client.set_terminated(run_id)
    flags = ["--name", "old", "--tracking-uri", uri, "--storage-path", str(folder / "ray")]
    base = {**EMPTY_FOLDER, "data_root": str(folder)}
    spec = parse_spec(eval(GOOD_SPACE, {"tune": tune}), base, flags, DEFAULTS)
    old = SweepRuns(uri, spec.experiment, "old")
    old.look_up(resume=False)
    old.open({}, {}, spec.kept())
    old.end("KILLED")
    return folder, uri


def snapshot(uri: str):
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = sorted(
        (r.info.run_id, r.info.status, r.info.end_time, len(r.data.metrics))
        for r in client.search_runs(experiments)
    )
    versions = sorted(
        (v.name, str(v.version), tuple(sorted(v.tags.items())))
        for v in client.search_model_versions()
    )
    aliases = {m.name: dict(m.aliases) for m in client.search_registered_models()}
    return experiments, runs, versions, aliases


def folders(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_text("not a picture")
    (junk / "notes.txt").write_text("nor this")
    (tmp_path / "a_file").write_text("")
    return {"empty": empty, "junk": junk, "file": tmp_path / "a_file"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    """`vae-data prepare` files that SHAPES (shapes at 64 px) cannot use: shapes at 32 px
    ({small}), and the images of a folder at 64 px ({other})."""
    folder = tmp_path_factory.mktemp("prepared")
    photos = folder / "photos"
    photos.mkdir()
    for i in range(6):
        Image.new("RGB", (80, 70), (40 * i, 90, 160)).save(photos / f"{i}.png")
    files = {"small": folder / "shapes32.arrow", "other": folder / "photos64.arrow"}
    configs = {
        "small": {"dataset": "shapes", "image_size": 32, "limit": 8},
        "other": {"dataset": "image_folder", "data_root": str(photos)},
    }
    for name, config in configs.items():
        write_plan(make_plan(Config.from_dict({"arch": "mlp", **config})), files[name])
    return files


# (case id, search space source, base config, extra flags, expected message); {empty},
# {junk}, {file} are replaced by paths in the test's folder, {small} and {other} by files of
# `prepared`.
SWEEP_CASES = [
    ("latent 0", '{"latent_dim": tune.choice([0, 4])}', SHAPES, [], "search space 'latent_dim' = 0: model.latent_dim: got 0; expected an integer >= 1"),  # noqa: E501
    ("sigma_x 0", '{"sigma_x": tune.uniform(0.0, 0.1)}', SHAPES, [], "search space 'sigma_x' = 0.0: model.sigma_x: got 0.0; expected a number > 0"),  # noqa: E501
    ("sigma_x < 0", '{"sigma_x": tune.uniform(-0.1, 0.1)}', SHAPES, [], "model.sigma_x: got -0.1; expected a number > 0"),  # noqa: E501
    ("kl weight < 0", '{"kl_weight": tune.uniform(-1.0, 1.0)}', SHAPES, [], "train.kl_weight: got -1.0; expected a number >= 0"),  # noqa: E501
    ("not a domain", '{"latent_dim": [4, 8]}', SHAPES, [], "search space 'latent_dim': expected a tune domain"),  # noqa: E501
    ("unknown field", '{"latent_size": tune.choice([4, 8])}', SHAPES, [], "search space 'latent_size' = 4: latent_size: unknown field in the config; known fields: arch, latent_dim"),  # noqa: E501
    ("num-samples 0", GOOD_SPACE, SHAPES, ["--num-samples", "0"], "--num-samples: got 0; expected >= 1"),  # noqa: E501
    ("max-epochs 0", GOOD_SPACE, SHAPES, ["--max-epochs", "0"], "--max-epochs: got 0; expected >= 1"),  # noqa: E501
    ("epoch-budget 0", GOOD_SPACE, SHAPES, ["--epoch-budget", "0"], "--epoch-budget: got 0; expected >= 1"),  # noqa: E501
    ("cpus 0", GOOD_SPACE, SHAPES, ["--cpus-per-trial", "0"], "--cpus-per-trial: got 0.0; expected > 0"),  # noqa: E501
    ("gpus < 0", GOOD_SPACE, SHAPES, ["--gpus-per-trial", "-1"], "--gpus-per-trial: got -1.0; expected >= 0"),  # noqa: E501
    ("gpus > node", GOOD_SPACE, SHAPES, ["--gpus-per-trial", "2"], "--gpus-per-trial 2: no node has that much"),  # noqa: E501
    ("image size", GOOD_SPACE, {**SHAPES, "image_size": 50}, [], "data.image_size: got 50; the conv architecture with 4 channel stages takes image sizes"),  # noqa: E501
    ("unknown dataset", GOOD_SPACE, {"dataset": "cifar10"}, [], "data.dataset: got 'cifar10'; expected one of ['mnist', 'fashion_mnist', 'celeba', 'image_folder', 'shapes']"),  # noqa: E501
    ("empty folder", GOOD_SPACE, {"dataset": "image_folder", "data_root": "{empty}"}, [], "image_folder: no image files (.jpg, .jpeg, .png, .webp) found in {empty}"),  # noqa: E501
    ("non-images", GOOD_SPACE, {"dataset": "image_folder", "data_root": "{junk}"}, [], "image_folder: none of the 1 images could be decoded; skipped 1 unreadable file(s) of 1: a.jpg"),  # noqa: E501
    ("missing data path", GOOD_SPACE, SHAPES, ["--data-path", "{empty}/shapes.arrow"], "data.data_path: {empty}/shapes.arrow: no such file"),  # noqa: E501
    ("data path of another size", GOOD_SPACE, SHAPES, ["--data-path", "{small}"], "data.data_path: {small} holds size 32, the config asks for 64; pass --image-size 32 (a sweep: --set image_size=32) or prepare the file for this config (vae-data prepare shapes --size 64 --out FILE). The file holds 16 shapes images of 3x32x32"),  # noqa: E501
    ("data path of another dataset", GOOD_SPACE, SHAPES, ["--data-path", "{other}"], "data.data_path: {other} holds dataset 'image_folder', the config asks for 'shapes'; pass --dataset image_folder (a sweep: --set dataset=image_folder) or prepare the file for this config (vae-data prepare shapes --size 64 --out FILE). The file holds 6 image_folder images of 3x64x64"),  # noqa: E501
    ("storage not writable", GOOD_SPACE, SHAPES, ["--storage-path", "{file}/ray"], "--storage-path {file}/ray: cannot write there (Not a directory)"),  # noqa: E501
    ("bare tracking path", GOOD_SPACE, SHAPES, ["--tracking-uri", "{empty}"], "--tracking-uri '{empty}': expected sqlite:///PATH, postgresql://..., or http(s)://server"),  # noqa: E501
    ("epochs in the space", '{"epochs": tune.choice([2, 4])}', SHAPES, [], "search space 'epochs': set by the sweep from --max-epochs"),  # noqa: E501
    ("grid with TPE", '{"latent_dim": tune.grid_search([2, 4])}', SHAPES, ["--search", "tpe"], "search space 'latent_dim': tune.grid_search is walked by --search random, not proposed by TPE; pass --search random"),  # noqa: E501
    ("mixed likelihoods", '{"likelihood": tune.choice(["gaussian", "bernoulli"])}', SHAPES, [], "search space 'likelihood': choice(['gaussian', 'bernoulli']) mixes likelihood families whose bits per dimension are over different data (binary: binarised pixels (Bernoulli decoder); continuous: dequantised 8-bit pixels (Gaussian decoders)), so val_bpd would pick one family by construction"),  # noqa: E501
    ("image size in the space", '{"image_size": tune.choice([32, 64])}', SHAPES, [], "search space 'image_size': choice([32, 64]) gives trials over different data (shapes/32px/3ch/center/all/val0.1/continuous and shapes/64px/"),  # noqa: E501
    ("registry of another key", GOOD_SPACE, EMPTY_FOLDER, ["--registry-name", "m"], "registered model m holds models of mnist/28px/1ch/center/all/val0.1/continuous, this sweep's are of image_folder/64px/3ch/center/all/val0.1/continuous"),  # noqa: E501
    # The sweep's name and MLflow experiment are checked first: before the data (a bad one
    # here), Ray or MLflow is touched.
    ("name taken", GOOD_SPACE, EMPTY_FOLDER, ["--name", "old"], "--name old: a sweep of that name exists already; pass --resume to continue it"),  # noqa: E501
    ("resume without name", GOOD_SPACE, EMPTY_FOLDER, ["--resume"], "--resume needs --name: the sweep to continue"),  # noqa: E501
    ("resume unknown experiment", GOOD_SPACE, EMPTY_FOLDER, ["--resume", "--name", "old", "--experiment", "nowhere"], "--resume: no experiment 'nowhere' in sqlite:///"),  # noqa: E501
    ("resume unknown name", GOOD_SPACE, EMPTY_FOLDER, ["--resume", "--name", "never"], "--resume: no MLflow run of a sweep named 'never' in this experiment"),  # noqa: E501
    ("resume, epochs changed", GOOD_SPACE, EMPTY_FOLDER, ["--resume", "--name", "old", "--max-epochs", "9"], "--max-epochs: got 9, but sweep old was started with 1; a resumed sweep keeps it"),  # noqa: E501
    ("resume, scheduler changed", GOOD_SPACE, EMPTY_FOLDER, ["--resume", "--name", "old", "--scheduler", "fifo"], "--scheduler: got 'fifo', but sweep old was started with 'asha'"),  # noqa: E501
    ("resume, space changed", '{"latent_dim": tune.choice([4, 16])}', EMPTY_FOLDER, ["--resume", "--name", "old"], "search space 'latent_dim': choice([4, 16]), but sweep old was started with choice([4, 8])"),  # noqa: E501
    ("resume, no saved state", GOOD_SPACE, EMPTY_FOLDER, ["--resume", "--name", "old", "--storage-path", "{empty}"], "--resume: no sweep 'old' to continue in {empty}"),  # noqa: E501
]  # fmt: skip
EARLY = {c[0] for c in SWEEP_CASES if c[2] is EMPTY_FOLDER} | {
    "epochs in the space",
    "grid with TPE",
}  # noqa: E501


@pytest.mark.parametrize(
    ("case", "space", "base", "flags", "message"),
    SWEEP_CASES,
    ids=[case[0] for case in SWEEP_CASES],
)
def test_a_sweep_refuses_bad_input_before_any_trial(
    store, prepared, tmp_path, request, monkeypatch, capsys, case, space, base, flags, message
):
    _, uri = store
    paths = {**folders(tmp_path), **prepared}

    def fill(text: str) -> str:
        return text.format(**paths) if isinstance(text, str) else text

    base = {k: fill(v) for k, v in base.items()}
    before = snapshot(uri)
    flags = [fill(f) for f in flags]
    if "--storage-path" not in flags:
        flags += ["--storage-path", str(tmp_path / "ray")]
    # In this process, as a sweep script calls it (a subprocess per case cost ~5 s of imports
    # each); any other exception than the usage exit fails the test with its traceback.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    try:
        with pytest.raises(SystemExit) as exited:
            main(
                eval(space, {"tune": tune}),
                base,
                "bad input",
                DEFAULTS,
                ["--tracking-uri", uri, *flags],
            )
        ray_started = ray.is_initialized()
    finally:
        ray.shutdown()  # the cases that get as far as starting Ray
    stderr = capsys.readouterr().err
    assert exited.value.code == 2, stderr[-3000:]
    assert fill(message) in stderr
    if case in EARLY:
        assert not ray_started and "preparing" not in stderr  # no data read, no Ray
    assert snapshot(uri) == before  # nothing created, ended or moved in the store
    assert not list((tmp_path / "ray").glob("*/trial_*"))  # no trial started
    record(
        "bad input",
        test="tests/test_bad_input.py::test_a_sweep_refuses_bad_input_before_any_trial",
        input=request.node.callspec.id,
        message=fill(message),
        exit_code=exited.value.code,
        trials_started=0,
        store_changed=False,
        seconds_to_error=round(time.monotonic() - started, 1),
    )


def vae_sweep(uri: str, *args: str) -> subprocess.CompletedProcess:
    return in_process(cli.main, *args, "--tracking-uri", uri)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nope-vae", "no registered model 'nope-vae'; registered models: m"),
        ("m@best", "m has no alias 'best': versions 1; aliases champion->1"),
        ("m/7", "m has no version 7: versions 1; aliases champion->1"),
    ],
)
def test_a_model_reference_that_does_not_exist_is_named(store, tmp_path, capsys, ref, message):
    _, uri = store
    before = snapshot(uri)
    with pytest.raises(SystemExit) as exited:
        cli.main(["pull", ref, "--out", str(tmp_path / "out"), "--tracking-uri", uri])
    stderr = capsys.readouterr().err
    assert exited.value.code == 2 and message in stderr, stderr[-2000:]
    assert snapshot(uri) == before and not (tmp_path / "out").exists()


class Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_replaced_by_a_pickle_are_refused_without_running_it(store, tmp_path):
    folder, uri = store
    marker = tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(Payload(marker)))  # the payload does run when unpickled
    assert marker.exists()
    marker.unlink()
    weights = sorted((folder / "art").rglob("checkpoint.safetensors"))
    assert weights  # the registered version's own weights file, in its artifact store
    for path in weights:
        path.write_bytes(pickle.dumps(Payload(marker)))
    for command in (["pull", "m@champion", "--out", str(tmp_path / "pulled")], ["sample", "m"]):
        if command[0] == "sample":
            command += ["--out", str(tmp_path / "s.png")]
        result = vae_sweep(uri, *command)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "cannot read as a safetensors checkpoint" in result.stderr
    assert not marker.exists()  # refused without executing anything
    assert not (tmp_path / "s.png").exists()


def test_weights_changed_after_registration_are_refused_naming_the_version(tmp_path):
    """Two versions of a tiny model in a new store; version 2's weights file in the artifact
    store overwritten with version 1's (valid weights, other numbers): `vae-sweep pull`,
    load_model and the pyfunc form refuse it, naming the version and both hashes, and pull
    nothing; untouched, version 1 is pulled; a version registered before hashes were (no tag)
    is pulled with a warning."""
    uri = migrated_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    files = []
    for seed in (1, 2):
        path = tmp_path / f"trained{seed}" / CHECKPOINT_NAME
        fit(tiny_config(epochs=1, seed=seed), make_splits()).save(path)
        run_id = client.create_run(experiment).info.run_id
        tags = {KEY: MNIST_KEY, "val_bpd": str(6 - seed), "sweep_run_id": run_id}
        log_and_register(uri, run_id, path, "w", tags)  # version 2 is champion (lower val_bpd)
        client.set_terminated(run_id)
        files.append(path)
    registered = client.get_model_version("w", "2").tags[WEIGHTS_SHA256]
    assert registered == file_sha256(files[1]) != file_sha256(files[0])
    source = client.get_model_version_download_uri("w", "2").removeprefix("file://")
    (stored,) = Path(source).rglob(CHECKPOINT_NAME)  # the version's own file, in its store
    shutil.copyfile(files[0], stored)

    refused = (
        f"w/2: its weights file {CHECKPOINT_NAME} has sha256 {file_sha256(files[0])}, the "
        f"version was registered with sha256 {registered} (tag {WEIGHTS_SHA256}): the weights "
        "were changed after registration, refused"
    )
    started = time.monotonic()
    result = vae_sweep(uri, "pull", "w@champion", "--out", str(tmp_path / "pulled"))
    assert result.returncode == 2 and refused in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "pulled").exists()
    with pytest.raises(WeightsChangedError) as err:
        load_model("w/2", tracking_uri=uri)
    assert refused in str(err.value)
    with using_tracking_uri(uri), pytest.raises(ValueError, match="weights were changed"):
        mlflow.pyfunc.load_model("models:/w/2")

    pulled = vae_sweep(uri, "pull", "w/1", "--out", str(tmp_path / "one"))
    assert pulled.returncode == 0 and "warning" not in pulled.stderr, pulled.stderr[-2000:]
    assert file_sha256(tmp_path / "one" / CHECKPOINT_NAME) == file_sha256(files[0])
    client.delete_model_version_tag("w", "1", WEIGHTS_SHA256)  # as registered before hashes
    old = vae_sweep(uri, "pull", "w/1", "--out", str(tmp_path / "old"))
    assert old.returncode == 0 and (tmp_path / "old" / CHECKPOINT_NAME).exists()
    assert (
        f"w/1 was registered before vae-sweep recorded a hash of the weights (tag "
        f"{WEIGHTS_SHA256}): they are loaded unverified" in old.stderr
    )
    record(
        "bad input",
        test="tests/test_bad_input.py::"
        "test_weights_changed_after_registration_are_refused_naming_the_version",
        input="registered weights overwritten in the artifact store (`vae-sweep pull`)",
        message=refused.replace(file_sha256(files[0]), "<found>").replace(
            registered, "<registered>"
        ),
        exit_code=result.returncode,
        trials_started=0,
        store_changed=False,
        seconds_to_error=round(time.monotonic() - started, 1),
    )
