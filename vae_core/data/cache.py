"""The node-local cache of prepared dataset files.

A trial that is given no prepared file asks `prepared_file(config)`: the first trial on a node
decodes the dataset into the cache, under a file lock, and every later or concurrent trial
memory-maps the same file. The cache key holds everything that changes the pixels: dataset,
size, colour, crop, limit and a checksum of the source list. A prepared file given as a URI
(s3://..., gs://...) is fetched once per node into the same cache.

Cache folder: data.cache_dir, else $VAE_CACHE_DIR, else ~/.cache/vae-sweep.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pyarrow.fs as pafs
from filelock import FileLock

from vae_core.config import Config
from vae_core.data import shapes
from vae_core.data.arrow import DataFileError, is_uri, open_prepared, write_plan
from vae_core.data.sources import (
    IDX_FILES,
    TORCHVISION_DATASETS,
    Plan,
    check_torchvision_files,
    find_celeba,
    list_images,
    plan_folder,
    plan_shapes,
    plan_torchvision,
    require_folder,
    resolve_data_root,
)

CACHE_ENV = "VAE_CACHE_DIR"
LOCK_TIMEOUT_S = 6 * 3600  # a CelebA prepare on a slow node can take a while


def cache_dir(configured: str | None = None) -> Path:
    root = configured or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vae-sweep"
    path = Path(root).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_plan(config: Config) -> Plan:
    """The Plan of the configured dataset (lists or reads its source)."""
    d, size, channels = config.data, config.image_size, config.channels
    if d.dataset == "shapes":
        return plan_shapes(size, channels, d.limit)
    root = resolve_data_root(d.data_root)
    if d.dataset in TORCHVISION_DATASETS:
        return plan_torchvision(d.dataset, root, size, channels, d.download, d.limit)
    if d.dataset == "celeba":
        folder, partition = find_celeba(root)
        return plan_folder("celeba", folder, size, channels, d.crop, partition, d.limit)
    return plan_folder("image_folder", root, size, channels, d.crop, None, d.limit)


def source_fingerprint(config: Config) -> str:
    """A short hash of what the cached file would be made from, computed without decoding."""
    d = config.data
    parts = [d.dataset, str(config.image_size), str(config.channels), d.crop, str(d.limit)]
    if d.dataset == "shapes":
        parts.append(f"{shapes.COUNTS} {shapes.SEEDS} v1")
    elif d.dataset in TORCHVISION_DATASETS:
        root = resolve_data_root(d.data_root)
        if not d.download:
            check_torchvision_files(d.dataset, root)
        raw = root / TORCHVISION_DATASETS[d.dataset] / "raw"
        parts += [str(raw)] + [f"{f} {_size(raw / f)}" for f in IDX_FILES]
    else:
        root = resolve_data_root(d.data_root)
        folder = find_celeba(root)[0] if d.dataset == "celeba" else root
        require_folder(d.dataset, folder)
        files = list_images(folder)
        parts += [str(folder)] + [f"{f} {_size(folder / f)}" for f in files]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else -1


def cached_name(config: Config) -> str:
    d = config.data
    limit = f"-limit{d.limit}" if d.limit else ""
    return (
        f"{d.dataset}-{config.image_size}px-c{config.channels}-{d.crop}{limit}-"
        f"{source_fingerprint(config)}.arrow"
    )


def prepared_file(config: Config, progress: bool = True) -> Path:
    """A local, complete prepared file for `config`, preparing or fetching it if need be."""
    if config.data.data_path:
        return fetch(config.data.data_path, config.data.cache_dir)
    path = cache_dir(config.data.cache_dir) / cached_name(config)
    with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
        if not _complete(path):
            print(f"vae-data: preparing {config.data.dataset} into {path}", file=sys.stderr)
            write_plan(make_plan(config), path, progress=progress)
    return path


def check_source(config: Config) -> None:
    """Raise here what a trial on this node would fail on when it loads its data (the data
    path, or the dataset's source folder; the generated shapes need nothing), preparing or
    fetching nothing."""
    path = config.data.data_path
    if path and is_uri(path):
        _remote_data_path(path)
    elif path:
        _local_data_path(path)
    else:
        source_fingerprint(config)


def _local_data_path(path: str) -> Path:
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise DataFileError(f"data.data_path: {path}: no such file")
    return resolved


def _remote_data_path(uri: str) -> tuple[pafs.FileSystem, str, pafs.FileInfo]:
    fs, remote = pafs.FileSystem.from_uri(uri)
    info = fs.get_file_info(remote)
    if info.type != pafs.FileType.File:
        raise DataFileError(f"data.data_path: {uri}: no such file on {fs.type_name}")
    return fs, remote, info


def _complete(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        open_prepared(path)
        return True
    except DataFileError:
        return False  # damaged (a crash mid-copy): made again


def fetch(uri: str, cache: str | None = None) -> Path:
    """A local path for a prepared file: a plain path as it is (local disk or a shared mount);
    a URI (s3://, gs://, hdfs://, file://) fetched through pyarrow once per node into the
    cache, keyed by URI, size and modification time."""
    if not is_uri(uri):
        return _local_data_path(uri)
    fs, remote, info = _remote_data_path(uri)
    key = hashlib.sha256(f"{uri} {info.size} {info.mtime_ns}".encode()).hexdigest()[:16]
    local = cache_dir(cache) / "remote" / f"{Path(remote).stem}-{key}.arrow"
    local.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(local) + ".lock", timeout=LOCK_TIMEOUT_S):
        if not _complete(local):
            tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
            pafs.copy_files(
                remote,
                str(tmp),
                source_filesystem=fs,
                destination_filesystem=pafs.LocalFileSystem(),
            )
            os.replace(tmp, local)
    return local
