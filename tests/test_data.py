"""MNIST and Fashion-MNIST from the offline copy through the Arrow cache; splits; errors."""

import pytest
import torch
from conftest import tiny_config

from vae_core.config import ConfigError
from vae_core.data import DatasetNotFoundError, load_splits, resolve_data_root, splits_from_file
from vae_core.data.arrow import open_prepared
from vae_core.data.cache import prepared_file


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_real_dataset_loads_as_uint8_splits(dataset, shared_data):
    splits = load_splits(tiny_config(dataset=dataset, data_root=str(shared_data)))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (54_000, 6_000, 10_000)
    for split in (splits.train, splits.val, splits.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert split.labels.unique().tolist() == list(range(10))
    assert splits.train.images.float().mean() > 20  # real pixels, not zeros


def test_the_file_holds_the_original_images(shared_data):
    import torchvision

    original = torchvision.datasets.MNIST(str(shared_data), train=False).data  # (10000, 28, 28)
    splits = load_splits(tiny_config(data_root=str(shared_data)))
    assert torch.equal(splits.test.images[:, 0], original)  # test rows keep their order
    train = torchvision.datasets.MNIST(str(shared_data), train=True).data
    stored = torch.cat([splits.train.images, splits.val.images])[:, 0]
    # train rows are stored shuffled: the same images, as a multiset
    assert torch.equal(
        stored.flatten(1).sum(1).sort().values, train.flatten(1).sum(1).sort().values
    )


def test_val_split_is_fixed_whatever_the_training_seed(shared_data):
    a = load_splits(tiny_config(data_root=str(shared_data), limit=500, seed=0))
    b = load_splits(tiny_config(data_root=str(shared_data), limit=500, seed=7))
    assert torch.equal(a.val.images, b.val.images) and len(a.val) == 50
    flat_train = {bytes(x.numpy()) for x in a.train.images}
    assert not any(bytes(x.numpy()) in flat_train for x in a.val.images)  # disjoint


def test_resized_once_at_prepare(shared_data):
    splits = load_splits(tiny_config(data_root=str(shared_data), limit=64, image_size=32))
    assert splits.train.images.shape[1:] == (1, 32, 32)
    assert splits.test.images.shape == (64, 1, 32, 32)


def test_the_cache_is_keyed_by_what_changes_the_pixels(shared_data):
    base = tiny_config(data_root=str(shared_data), limit=64)
    same = prepared_file(base.replace(seed=3, latent_dim=9, epochs=7))
    assert prepared_file(base) == same
    assert prepared_file(base.replace(image_size=32)) != same
    assert prepared_file(base.replace(color="rgb")) != same


def test_a_file_for_another_config_is_refused_by_name(shared_data):
    path = prepared_file(tiny_config(data_root=str(shared_data), limit=64))
    with pytest.raises(
        ConfigError, match="holds size 28, the config asks for 32; pass --image-size 28"
    ):
        splits_from_file(open_prepared(path), tiny_config(image_size=32))
    with pytest.raises(ConfigError, match="holds dataset 'mnist'.*pass --dataset mnist"):
        splits_from_file(open_prepared(path), tiny_config(dataset="fashion_mnist"))


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
