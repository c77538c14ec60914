"""MNIST and Fashion-MNIST from the offline copy; splits; resizing; a missing dataset."""

import pytest
import torch
from conftest import tiny_config

from vae_core.data import DatasetNotFoundError, load_splits, resize, resolve_data_root


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_real_dataset_loads_as_uint8_splits(dataset, shared_data):
    splits = load_splits(tiny_config(dataset=dataset, data_root=str(shared_data)))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (54_000, 6_000, 10_000)
    for split in (splits.train, splits.val, splits.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert split.labels.unique().tolist() == list(range(10))
    assert splits.train.images.float().mean() > 20  # real pixels, not zeros


def test_val_split_is_fixed_whatever_the_training_seed(shared_data):
    a = load_splits(tiny_config(data_root=str(shared_data), limit=500, seed=0))
    b = load_splits(tiny_config(data_root=str(shared_data), limit=500, seed=7))
    assert torch.equal(a.val.images, b.val.images) and len(a.val) == 50
    # disjoint: no validation image is also a training image
    flat_train = {bytes(x.numpy()) for x in a.train.images}
    assert not any(bytes(x.numpy()) in flat_train for x in a.val.images)


def test_resize_once_at_load(shared_data):
    splits = load_splits(tiny_config(data_root=str(shared_data), limit=64, image_size=32))
    assert splits.train.images.shape[1:] == (1, 32, 32)
    assert splits.test.images.shape == (64, 1, 32, 32)


def test_resize_keeps_constant_images_constant():
    images = torch.full((3, 1, 28, 28), 200, dtype=torch.uint8)
    assert torch.equal(resize(images, 64), torch.full((3, 1, 64, 64), 200, dtype=torch.uint8))


def test_missing_dataset_says_where_the_files_must_be(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits(tiny_config(dataset="fashion_mnist", data_root=str(tmp_path)))
    message = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "--download" in message


def test_data_root_falls_back_to_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VAE_DATA_ROOT", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    monkeypatch.delenv("VAE_DATA_ROOT")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root(None) == tmp_path / "data"
    assert resolve_data_root("rel").is_absolute()
