"""celeba and image_folder: a generated CelebA-like folder of JPEGs through prepare and load."""

import numpy as np
import pytest
from conftest import tiny_config
from fakes import celeba_like_image, make_celeba_folder
from PIL import Image

from vae_core.config import Config
from vae_core.data import load_splits
from vae_core.data.arrow import PrepareError, open_prepared, write_plan
from vae_core.data.cache import make_plan
from vae_core.data.sources import DatasetNotFoundError, crop_box


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    make_celeba_folder(root, 300, corrupt=1, grayscale=1)
    return root


def celeba_config(root, **changes) -> Config:
    return tiny_config(**{"dataset": "celeba", "data_root": str(root), "arch": "conv", **changes})


def test_prepare_skips_the_corrupt_file_and_keeps_the_official_split(celeba_root, tmp_path):
    meta = write_plan(make_plan(celeba_config(celeba_root)), tmp_path / "c.arrow", progress=False)
    assert meta["count"] == 299
    assert [s["file"] for s in meta["skipped"]] == ["000001.jpg"]
    # list_eval_partition.txt: i % 10 in 0..7 train, 8 val, 9 test (000001 was skipped)
    counts = {name: stop - start for name, (start, stop) in meta["splits"].items()}
    assert counts == {"train": 239, "val": 30, "test": 30}
    prepared = open_prepared(tmp_path / "c.arrow")
    files = prepared.column("file")
    test_files = files[slice(*meta["splits"]["test"])]
    assert all(int(f[:6]) % 10 == 9 for f in test_files)


def test_strict_fails_and_writes_nothing(celeba_root, tmp_path):
    with pytest.raises(
        PrepareError, match=r"1 file\(s\) could not be decoded and --strict is set: 000001.jpg"
    ):
        write_plan(
            make_plan(celeba_config(celeba_root)),
            tmp_path / "c.arrow",
            strict=True,
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []


def test_grayscale_jpeg_is_converted_to_rgb(celeba_root, tmp_path):
    write_plan(make_plan(celeba_config(celeba_root)), tmp_path / "c.arrow", progress=False)
    prepared = open_prepared(tmp_path / "c.arrow")
    row = list(prepared.column("file")).index("000002.jpg")  # the grayscale one
    image = prepared.images[row].numpy()
    assert image.shape == (3, 64, 64)
    assert np.array_equal(image[0], image[1]) and np.array_equal(image[1], image[2])


def test_loaded_splits_use_the_official_val(celeba_root):
    splits = load_splits(celeba_config(celeba_root))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (239, 30, 30)
    assert splits.train.labels is None
    assert splits.train.images.shape[1:] == (3, 64, 64)


def test_without_partition_file_split_by_file_name(tmp_path):
    make_celeba_folder(tmp_path, 60, partition=False, corrupt=0, grayscale=0)
    plan = make_plan(celeba_config(tmp_path))
    again = make_plan(celeba_config(tmp_path))
    assert plan.splits == again.splits and plan.files == again.files
    assert set(plan.splits) == {"train", "test"}
    assert "split by file-name hash" in plan.source


def test_crop_and_resize_are_relative_to_the_image(tmp_path):
    # A downscaled copy (89x109) frames the same as the full 178x218.
    full, half = tmp_path / "full", tmp_path / "half"
    make_celeba_folder(full, 4, partition=False, corrupt=0, grayscale=0)
    make_celeba_folder(half, 4, partition=False, corrupt=0, grayscale=0, size=(89, 109))
    for crop in ("center", "tight", "none"):
        a = make_plan(celeba_config(full, crop=crop)).decode(0, 4)[0].astype(int)
        b = make_plan(celeba_config(half, crop=crop)).decode(0, 4)[0].astype(int)
        assert np.abs(a - b).mean() < 6, crop
    assert crop_box(178, 218, "center") == (0.0, 20.0, 178.0, 198.0)
    assert crop_box(178, 218, "tight") == (35.0, 55.0, 143.0, 163.0)  # the TF model's 108 px
    assert crop_box(89, 109, "tight") == (17.5, 27.5, 71.5, 81.5)


def test_128_px_tight_crop(celeba_root):
    config = celeba_config(celeba_root, arch="conv_bn", image_size=128, crop="tight", limit=8)
    splits = load_splits(config)
    assert splits.train.images.shape[1:] == (3, 128, 128)


def test_missing_partition_entry_is_named(tmp_path):
    folder = make_celeba_folder(tmp_path, 5, corrupt=0, grayscale=0)
    partition = folder.parent / "list_eval_partition.txt"
    partition.write_text("\n".join(partition.read_text().splitlines()[:4]) + "\n")
    with pytest.raises(ValueError, match=r"1 image\(s\) have no partition entry, e.g. 000005"):
        make_plan(celeba_config(tmp_path))


def test_celeba_not_found_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="img_align_celeba.*cannot be downloaded"):
        make_plan(celeba_config(tmp_path))


def test_image_folder_with_classes_and_every_colour_mode(tmp_path):
    modes = {"RGB": "png", "L": "png", "RGBA": "png", "CMYK": "jpg", "P": "png", "LA": "webp"}
    for i, (mode, ext) in enumerate(modes.items()):
        for cls in ("cats", "dogs"):
            (tmp_path / cls).mkdir(exist_ok=True)
            image = celeba_like_image(i, (40, 30)).convert(mode)
            image.save(tmp_path / cls / f"{mode}.{ext}")
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    config = tiny_config(dataset="image_folder", data_root=str(tmp_path), image_size=16)
    plan = make_plan(config)
    assert len(plan) == 12 and plan.label_names == ["cats", "dogs"]
    images, failures = plan.decode(0, 12)
    assert failures == [] and images.shape == (12, 3, 16, 16)
    gray = make_plan(config.replace(color="gray")).decode(0, 12)[0]
    assert gray.shape == (12, 1, 16, 16)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no image files"):
        make_plan(tiny_config(dataset="image_folder", data_root=str(tmp_path)))
    with pytest.raises(DatasetNotFoundError, match="is not a folder"):
        make_plan(tiny_config(dataset="image_folder", data_root=str(tmp_path / "nope")))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    config = tiny_config(dataset="image_folder", data_root=str(tmp_path))
    with pytest.raises(PrepareError, match="none of the 1 images could be decoded; .*broken"):
        write_plan(make_plan(config), tmp_path / "x.arrow", progress=False)
    assert not (tmp_path / "x.arrow").exists()
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    meta = write_plan(make_plan(config), tmp_path / "x.arrow", progress=False)
    assert meta["count"] == 1 and meta["skipped"][0]["file"] == "broken.png"
