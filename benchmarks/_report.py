"""What every benchmark script shares: its JSON results under benchmarks/results/, its section
of docs/BENCHMARKS.md between markers, and a line on the machine and commit it ran on."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "BENCHMARKS.md"
RESULTS = REPO / "benchmarks" / "results"
HEADER = (
    "# Benchmarks\n\nFigures written by the scripts in `benchmarks/`, each against a baseline "
    "run in the same\nprocess or session on the same machine. Re-run a script to refresh its "
    "section; never edit the numbers.\n"
)


def commit() -> str:
    """The short commit the figures were measured at (+dirty when the tree has changes)."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> str:
    """CPU cores, architecture, GPU if any, torch: the line under each section's title."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} CPU cores ({platform.machine()}), {gpu}, torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def command() -> str:
    """The command line that ran this script, as a user would type it."""
    script = Path(sys.argv[0]).resolve()
    name = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    return " ".join(["python", str(name), *sys.argv[1:]])


def timed_run(
    args: list[str], what: str, **kwargs: Any
) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command to its end, its output captured; its result and wall seconds. A failure
    stops the benchmark, saying `what` failed and how it ended."""
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return done, seconds


def save_json(name: str, data: dict) -> Path:
    """benchmarks/results/<name>.json, with the commit, machine and command added; written
    to a temporary file and renamed, never half-written."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"commit": commit(), "machine": machine(), "command": command(), **data}
    path = RESULTS / f"{name}.json"
    with tempfile.NamedTemporaryFile("w", dir=RESULTS, delete=False, suffix=".tmp") as f:
        json.dump(record, f, indent=2)
    os.chmod(f.name, 0o644)  # NamedTemporaryFile makes it private
    os.replace(f.name, path)
    return path


def write_section(name: str, body: str, first: bool = False, doc: Path = DOC) -> None:
    """Replace the section `name` of `doc` (docs/BENCHMARKS.md), or add it at the end (first:
    before every other section)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else HEADER
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    elif first and "<!-- " in text:
        at = text.index("<!-- ")
        text = text[:at] + section + "\n\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.parent.mkdir(exist_ok=True)
    tmp = doc.with_name(f".{doc.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)
    print(section)


def sections(doc: Path) -> list[str]:
    """The sections of `doc` that scripts wrote with write_section, markers included: what a
    script that rewrites the whole file keeps."""
    text = doc.read_text() if doc.exists() else ""
    found = re.finditer(r"<!-- (\S+):start -->.*?<!-- \1:end -->", text, flags=re.S)
    return [m.group(0) for m in found]


def trial_results(experiment: Path) -> list[tuple[Any, list[dict]]]:
    """Each trial of the Tune experiment folder with every result it reported, in order
    (none for a trial that started but never reported)."""
    from ray import tune  # only the sweep benchmarks need Ray

    out = []
    for trial in tune.ExperimentAnalysis(str(experiment)).trials:
        path = Path(trial.path) / "result.json"
        lines = path.read_text().splitlines() if path.exists() else []
        out.append((trial, [json.loads(line) for line in lines]))
    return out


# What a trial of the sweep engine times itself (sweeps.trainable reports overhead_<part>_s)
TRIAL_PARTS = ("open_run", "load_data", "log", "checkpoint")


def trial_times(trial, results: list[dict]) -> dict:
    """When a trial's function began and last reported, its training seconds (every epoch,
    validation included), the parts it timed itself, its config."""
    last = results[-1]
    times = {p: last.get(f"overhead_{p}_s", 0.0) for p in TRIAL_PARTS}
    times |= {"entered": last["entered_at"], "left": last["reported_at"]}
    return times | {"train": sum(r["epoch_seconds"] for r in results), "config": trial.config}


def slot_seconds(trials: list[dict], at: float, wall: float, slots: int, trained: float):
    """Overhead per trial in slot-seconds, (wall x slots - `trained`) / N, for a sweep that
    started at `at` and took `wall` s; and its parts per trial: the slots idle while the
    driver starts and ends, the parts the trials timed themselves (the caller adds its own
    and takes the rest as `between_trials`). Also the driver's start and end, in seconds."""
    n = len(trials)
    start = min(t["entered"] for t in trials) - at
    end = at + wall - max(t["left"] for t in trials)
    parts = {p: sum(t[p] for t in trials) / n for p in TRIAL_PARTS}
    parts["driver_start"] = start * slots / n
    parts["driver_end"] = end * slots / n
    return (wall * slots - trained) / n, parts, start, end
