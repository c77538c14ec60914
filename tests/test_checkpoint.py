"""Checkpoints: no pickle, bit-exact round trip, clear errors for files that are not ours."""

import json
import struct

import pytest
import torch
from conftest import make_splits, tiny_config

from vae_core.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from vae_core.trainer import fit


@pytest.fixture
def trained(tmp_path):
    config = tiny_config(
        arch="conv_bn", image_size=32, widths=[4, 8, 8], likelihood="gaussian_learned", epochs=1
    )
    data = make_splits(size=32)
    state = fit(config, data)
    path = tmp_path / "run" / "checkpoint.safetensors"
    state.save(path)
    return state, path, data


def test_round_trip_gives_identical_outputs(trained):
    state, path, data = trained
    model = load_model(path)
    assert not model.training
    x = model.coding.encode(data.val.images[:8], dequantize=False)
    state.model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode(x).mean, state.model.encode(x).mean)
        assert torch.equal(model.reconstruct(x), state.model.reconstruct(x))
    for name, value in state.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name  # batch-norm buffers too


def test_file_is_plain_safetensors_with_the_whole_state(trained):
    state, path, _ = trained
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])  # safetensors layout
    meta = header["__metadata__"]
    assert meta["format"] == "vae-sweep/checkpoint-1"
    assert json.loads(meta["config"]) == state.config.to_dict()
    assert any(k.startswith("optim.") and k.endswith(".exp_avg_sq") for k in header)
    assert {"rng.shuffle", "rng.noise"} <= set(header)
    # which device each generator's state comes from: a CUDA one's does not fit a CPU one
    assert json.loads(meta["rng_devices"]) == {"shuffle": "cpu", "noise": "cpu"}
    assert b"\x80\x04" not in raw[:16]  # not a pickle stream
    ckpt = read_checkpoint(path.parent)  # a run folder works too
    assert ckpt.epoch == 1 and ckpt.history == state.history
    assert ckpt.rng_devices == {"shuffle": "cpu", "noise": "cpu"}


def test_no_temporary_file_is_left_behind(trained):
    _, path, _ = trained
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.safetensors"]


def test_truncated_foreign_and_missing_files_are_refused_by_name(trained, tmp_path):
    _, path, _ = trained
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(foreign))
    for bad, fragment in (
        (truncated, "cannot read"),
        (foreign, "not a vae-sweep checkpoint"),
        (tmp_path / "absent.safetensors", "cannot read"),
    ):
        with pytest.raises(CheckpointError, match=fragment) as err:
            read_checkpoint(bad)
        assert str(bad) in str(err.value)


def test_extra_strings_survive(trained, tmp_path):
    state, _, _ = trained
    state.extra["mlflow_run_id"] = "abc123"
    save_checkpoint(tmp_path / "c.safetensors", state.checkpoint())
    assert read_checkpoint(tmp_path / "c.safetensors").extra == {"mlflow_run_id": "abc123"}


def test_a_checkpoint_saved_before_widths_was_renamed_still_loads(trained, tmp_path):
    """0.1.0 called the conv widths `model.channels`; its checkpoints load as they were."""
    from safetensors.torch import load_file, save_file

    state, path, data = trained
    header = json.loads(path.read_bytes()[8 : 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])
    meta = header["__metadata__"]
    config = json.loads(meta["config"])
    config["model"]["channels"] = config["model"].pop("widths")
    old = tmp_path / "old.safetensors"
    save_file(load_file(path), old, metadata={**meta, "config": json.dumps(config)})
    assert read_checkpoint(old).config.model.widths == (4, 8, 8)
    before, after = load_model(path), load_model(old)
    x = before.coding.encode(data.val.images[:4], dequantize=False)
    assert torch.equal(after.reconstruct(x), before.reconstruct(x))
