"""The Arrow file: zero-copy memory maps shared across processes, one prepare per node,
URIs, and refusal of anything truncated, foreign or half-written."""

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest
from conftest import REPO, tiny_config

from vae_core.data.arrow import DataFileError, open_prepared, write_plan
from vae_core.data.cache import fetch, make_plan, prepared_file
from vae_core.data.sources import Plan


@pytest.fixture(scope="module")
def shapes_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arrow") / "shapes.arrow"
    write_plan(
        make_plan(tiny_config(dataset="shapes", image_size=32, limit=300)), path, progress=False
    )
    return path


def test_images_are_a_zero_copy_view_of_the_mapped_file(shapes_file):
    before = pa.total_allocated_bytes()
    prepared = open_prepared(shapes_file)
    images = prepared.images
    assert images.shape == (600, 3, 32, 32)
    assert pa.total_allocated_bytes() - before < 1 << 20  # 1.8 MB of pixels, none copied
    values = prepared.table.column("image").chunk(0).storage.values.buffers()[1]
    assert images.data_ptr() == values.address and not values.is_mutable  # the mapped bytes


READER = textwrap.dedent("""
    import hashlib, sys, time
    from vae_core.data.arrow import open_prepared
    images = open_prepared(sys.argv[1]).images
    print(hashlib.sha256(images.numpy().tobytes()).hexdigest(), flush=True)
""")


def test_two_processes_read_identical_data(shapes_file):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(shapes_file)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    digests = [p.communicate(timeout=120)[0].strip() for p in procs]
    local = hashlib.sha256(open_prepared(shapes_file).images.numpy().tobytes()).hexdigest()
    assert digests == [local, local]


PREPARER = textwrap.dedent("""
    import sys
    from vae_core.config import Config
    from vae_core.data.cache import prepared_file
    config = Config.from_dict({"dataset": "shapes", "image_size": 32, "limit": 2000,
                               "arch": "mlp", "cache_dir": sys.argv[1]})
    print(prepared_file(config, progress=False))
""")


def test_of_two_concurrent_prepares_only_one_does_the_work(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARER, str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    preparing = [err.count("vae-data: preparing shapes") for _, err in results]
    assert sorted(preparing) == [0, 1]
    assert len(list(tmp_path.glob("*.arrow"))) == 1 and not list(tmp_path.glob(".*tmp"))
    assert open_prepared(paths.pop()).meta["count"] == 4000


def test_truncated_and_foreign_files_are_refused(shapes_file, tmp_path):
    truncated = tmp_path / "truncated.arrow"
    truncated.write_bytes(shapes_file.read_bytes()[: shapes_file.stat().st_size // 2])
    with pytest.raises(DataFileError, match="truncated.arrow: not a complete Arrow IPC file"):
        open_prepared(truncated)
    foreign = tmp_path / "foreign.arrow"
    table = pa.table({"x": [1, 2, 3]})
    with pa.OSFile(str(foreign), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(DataFileError, match="foreign.arrow: an Arrow file, but not a vae-sweep"):
        open_prepared(foreign)
    with pytest.raises(DataFileError, match="no such file"):
        open_prepared(tmp_path / "absent.arrow")


def test_a_damaged_cache_entry_is_made_again(tmp_path):
    config = tiny_config(dataset="shapes", image_size=16, limit=50, cache_dir=str(tmp_path))
    path = prepared_file(config, progress=False)
    path.write_bytes(path.read_bytes()[:1000])  # as if a node died mid-write
    assert prepared_file(config, progress=False) == path
    assert open_prepared(path).meta["count"] == 100


def test_an_interrupted_prepare_leaves_nothing(tmp_path):
    good = make_plan(tiny_config(dataset="shapes", image_size=16, limit=1500))

    def decode(start, stop):
        if start >= 1024:
            raise KeyboardInterrupt  # ^C in the second chunk
        return good.decode(start, stop)

    plan = Plan(**{**good.__dict__, "decode": decode})
    with pytest.raises(KeyboardInterrupt):
        write_plan(plan, tmp_path / "x.arrow", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_uri_targets_go_through_pyarrow_and_are_fetched_once(shapes_file, tmp_path):
    uri = f"file://{tmp_path}/remote/shapes.arrow"
    (tmp_path / "remote").mkdir()
    write_plan(
        make_plan(tiny_config(dataset="shapes", image_size=32, limit=300)), uri, progress=False
    )
    cache = tmp_path / "cache"
    local = fetch(uri, str(cache))
    assert local.parent == cache / "remote" and fetch(uri, str(cache)) == local
    assert np.array_equal(
        open_prepared(local).images.numpy(), open_prepared(shapes_file).images.numpy()
    )
    with pytest.raises(DataFileError, match="no such file"):
        fetch(f"file://{tmp_path}/remote/absent.arrow", str(cache))
