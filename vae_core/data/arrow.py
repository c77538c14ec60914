"""Datasets decoded once into an Arrow IPC file, memory-mapped by every trial on a node.

File layout (one record batch, uncompressed, so a memory map reads it with zero copies):

    image   fixed_shape_tensor<uint8>[C, H, W]   the pixels
    split   dictionary<string>                   train | val | test; rows grouped in that order
    label   int64, nullable                      class index (names in the metadata)
    file    string (file-based datasets)         source file, relative to the source folder
    <factor> float32 / int64 (shapes)            generative factors

Schema metadata `vae_sweep` (JSON): format, dataset, source, size, channels, count, split row
ranges, label names, factor names, options (crop, ...), the source checksum and skipped files.
Train rows are stored in a fixed shuffled order, so a validation share is a slice of them.

Files are written to a temporary name and renamed (an interrupted prepare leaves nothing that
looks valid), through pyarrow's filesystems when the target is a URI (s3://, gs://, file://).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import torch
from tqdm.auto import tqdm

from vae_core.data.sources import Plan

FORMAT = "vae-sweep/arrow-1"
META_KEY = b"vae_sweep"
SPLIT_NAMES = ("train", "val", "test")
CHUNK_ROWS = 1024  # images decoded per step of a prepare


class DataFileError(ValueError):
    """A file is not a complete vae-sweep dataset file; the message names it and why."""


class PrepareError(RuntimeError):
    """Files that could not be decoded (any, with prepare --strict; all, otherwise); the
    message lists them."""


def is_uri(target: str | os.PathLike) -> bool:
    return "://" in str(target)


def _scratch_dir(out: str | os.PathLike) -> Path:
    """Where the scratch array and the temporary file go: beside a local target."""
    return Path(tempfile.gettempdir()) if is_uri(out) else Path(out).resolve().parent


def write_plan(
    plan: Plan, out: str | os.PathLike, *, strict: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Decode every row of `plan` once and write the Arrow file `out` (path or URI).

    Unreadable images are skipped and listed in the metadata (`strict` raises instead, before
    anything is written). Returns the metadata.
    """
    n, shape = len(plan), (plan.channels, plan.size, plan.size)
    scratch_dir = _scratch_dir(out)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=scratch_dir, prefix=".scratch-", suffix=".u8") as tmp:
        # The images go to a disk-backed array, so 200,000 CelebA images need no 2.5 GB of RAM.
        images = np.memmap(tmp.name, dtype=np.uint8, mode="w+", shape=(max(n, 1), *shape))
        kept, failures = _decode_all(plan, images, progress)
        if failures and strict:
            raise PrepareError(_failure_report(plan, failures, strict=True))
        if not kept:
            raise PrepareError(
                f"{plan.dataset}: none of the {n} images could be decoded; "
                + _failure_report(plan, failures, strict=False)
            )
        table, meta = _table(plan, images[: len(kept)], np.asarray(kept), failures)
        _write_atomically(table, out)
    if failures:
        print(f"vae-data: {_failure_report(plan, failures, strict=False)}", file=sys.stderr)
    return meta


def _decode_all(
    plan: Plan,
    images: np.memmap,
    progress: bool,
) -> tuple[list[int], list[tuple[int, str]]]:
    kept: list[int] = []
    failures: list[tuple[int, str]] = []
    bar = tqdm(
        total=len(plan),
        unit="img",
        desc=f"decoding {plan.dataset}",
        disable=not progress,
        dynamic_ncols=True,
    )
    for start in range(0, len(plan), CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, len(plan))
        decoded, failed = plan.decode(start, stop)
        images[len(kept) : len(kept) + len(decoded)] = decoded  # failed rows are packed over
        bad = {row for row, _ in failed}
        kept += [row for row in range(start, stop) if row not in bad]
        failures += failed
        bar.update(stop - start)
        if failures:
            bar.set_postfix(skipped=len(failures), refresh=False)
    bar.close()
    return kept, failures


def _failure_report(plan: Plan, failures: list[tuple[int, str]], strict: bool) -> str:
    names = [plan.files[row] if plan.files else f"row {row}" for row, _ in failures]
    head = "; ".join(
        f"{name} ({reason})" for name, (_, reason) in zip(names[:10], failures, strict=False)
    )
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    if strict:
        return (
            f"{plan.dataset}: {len(failures)} file(s) could not be decoded and --strict "
            f"is set: {head}{more}"
        )
    return f"skipped {len(failures)} unreadable file(s) of {len(plan)}: {head}{more}"


def _table(
    plan: Plan,
    images: np.ndarray,
    kept: np.ndarray,
    failures: list[tuple[int, str]],
) -> tuple[pa.Table, dict[str, Any]]:
    splits = [plan.splits[row] for row in kept]
    counts = Counter(splits)
    ranges, start = {}, 0
    for name in SPLIT_NAMES:  # rows come grouped train, val, test (see sources._train_first)
        if counts[name]:
            ranges[name] = [start, start + counts[name]]
            start += counts[name]
    columns: dict[str, pa.Array] = {
        "image": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(images)),
        "split": pa.array(splits).dictionary_encode(),
        "label": pa.array(
            plan.labels[kept] if plan.labels is not None else [None] * len(kept), type=pa.int64()
        ),
    }
    if plan.files is not None:
        columns["file"] = pa.array([plan.files[row] for row in kept], type=pa.string())
    for name, values in (plan.factors or {}).items():
        columns[name] = pa.array(values[kept])
    meta = {
        "format": FORMAT,
        "dataset": plan.dataset,
        "source": plan.source,
        "size": plan.size,
        "channels": plan.channels,
        "count": len(kept),
        "splits": ranges,
        "label_names": plan.label_names,
        "factors": list(plan.factors or []),
        "options": plan.options,
        "source_checksum": plan.checksum,
        "skipped": [
            {"file": plan.files[row] if plan.files else row, "reason": reason}
            for row, reason in failures
        ],
    }
    table = pa.table(columns).replace_schema_metadata({META_KEY: json.dumps(meta)})
    return table, meta


def _write_atomically(table: pa.Table, out: str | os.PathLike) -> None:
    if not is_uri(out):
        out = Path(out).resolve()
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return
    fs, path = pafs.FileSystem.from_uri(str(out))
    tmp = f"{path}.{os.getpid()}.tmp"
    with fs.open_output_stream(tmp) as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    fs.move(tmp, path)


# ----------------------------------------------------------------------------- reading


@dataclass
class Prepared:
    """A memory-mapped dataset file: zero-copy uint8 images and their columns."""

    path: Path
    meta: dict[str, Any]
    table: pa.Table

    @property
    def images(self) -> torch.Tensor:
        """(N, C, H, W) uint8, a read-only view of the mapped file (never write to it)."""
        array = self.table.column("image").chunk(0).to_numpy_ndarray()
        with warnings.catch_warnings():  # torch warns that the buffer is read-only: it is
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(array)

    def column(self, name: str) -> np.ndarray:
        return self.table.column(name).to_numpy()

    def split_range(self, name: str) -> tuple[int, int] | None:
        found = self.meta["splits"].get(name)
        return tuple(found) if found else None


def open_prepared(path: str | os.PathLike) -> Prepared:
    """Memory-map a file written by write_plan; DataFileError if it is not one, or not whole."""
    path = Path(path)
    try:
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    except FileNotFoundError as err:
        raise DataFileError(f"{path}: no such file") from err
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
        raise DataFileError(
            f"{path}: not a complete Arrow IPC file ({err}); prepare it again "
            "with `vae-data prepare`"
        ) from err
    raw = (table.schema.metadata or {}).get(META_KEY)
    meta = json.loads(raw) if raw else {}
    if meta.get("format") != FORMAT:
        raise DataFileError(
            f"{path}: an Arrow file, but not a vae-sweep dataset (format "
            f"{meta.get('format')!r}, expected {FORMAT!r})"
        )
    if table.num_rows != meta["count"] or "image" not in table.column_names:
        raise DataFileError(
            f"{path}: holds {table.num_rows} rows, its metadata says "
            f"{meta['count']}; the file is damaged, prepare it again"
        )
    if table.column("image").num_chunks != 1:
        table = table.combine_chunks()  # not written by us; works, but as a private copy
    return Prepared(path.resolve(), meta, table)
