"""A trial's checkpoints as Tune stored them (local disk, NFS or s3://): which are whole, and
where a trial restarts when the one Tune restores it from is damaged.

Tune restores a trial from its latest checkpoint and never looks inside. A file cut short
(a full disk, a copy interrupted, someone's `truncate`) would fail every retry of the trial
the same way, and the end of the sweep could pick it as the best. Here the trial falls back to
its newest earlier checkpoint that reads (Tune keeps the best two and the latest), or to epoch 0,
and the end of the sweep passes over a file whose size its header does not account for.
"""

from __future__ import annotations

import json
import posixpath
import re
import struct
from pathlib import Path

import pyarrow.fs as pafs
from ray import tune

from vae_core.checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointError, read_checkpoint

FOLDER = re.compile(r"checkpoint_(\d+)$")  # Tune's checkpoint_000003


def damage(checkpoint: tune.Checkpoint) -> str | None:
    """Why the checkpoint's file cannot be whole, from its size and its safetensors header
    alone (two small reads, no download); None when it may be."""
    fs, path = checkpoint.filesystem, posixpath.join(checkpoint.path, CHECKPOINT_NAME)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return f"{path}: no such file"
    try:
        with fs.open_input_file(path) as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path}: {info.size} bytes, too short for a safetensors file"
            (length,) = struct.unpack("<Q", head)  # the header's size, little-endian
            if length > info.size - 8:
                return f"{path}: {info.size} bytes, shorter than its own header"
            header = json.loads(f.read(length))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        return f"{path}: unreadable header ({type(err).__name__}: {err})"
    expected = 8 + length + max(ends, default=0)
    if info.size != expected:
        return f"{path}: {info.size} bytes, its header accounts for {expected} (cut short)"
    return None


def earlier(damaged: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The trial's other stored checkpoints older than `damaged`, newest first."""
    fs, parent = damaged.filesystem, posixpath.dirname(damaged.path.rstrip("/"))
    own = FOLDER.search(damaged.path.rstrip("/"))
    limit = int(own.group(1)) if own else None
    found = []
    for info in fs.get_file_info(pafs.FileSelector(parent)):
        match = FOLDER.search(info.path)
        if info.type == pafs.FileType.Directory and match:
            index = int(match.group(1))
            if limit is None or index < limit:
                found.append((index, tune.Checkpoint(info.path, filesystem=fs)))
    return [c for _, c in sorted(found, key=lambda item: item[0], reverse=True)]


def restart_point(
    damaged: tune.Checkpoint, error: CheckpointError, trial: str
) -> tuple[Checkpoint | None, str]:
    """Where a trial whose checkpoint `damaged` cannot be read (`error`) restarts: the newest
    earlier checkpoint of its own that reads, or None (epoch 0); and a line that says so,
    naming the trial and the file."""
    file = posixpath.join(damaged.path, CHECKPOINT_NAME)
    why = str(error).partition(": ")[2] or str(error)  # (its path is a local copy's)
    said = f"vae-sweep: trial {trial}: {file} is damaged: {why}; restarting"
    for candidate in earlier(damaged):
        try:
            with candidate.as_directory() as folder:
                ckpt = read_checkpoint(Path(folder) / CHECKPOINT_NAME)
        except CheckpointError:
            continue  # damaged too: an older one, or none
        name = posixpath.basename(candidate.path.rstrip("/"))
        return ckpt, f"{said} from its previous checkpoint {name} (epoch {ckpt.epoch})"
    return None, f"{said} from scratch (epoch 0): no earlier checkpoint of it reads"
