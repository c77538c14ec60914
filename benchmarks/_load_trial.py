"""One simulated trial of benchmarks/tracking_load.py, in a process of its own: it logs as our
trials do, through sweeps.lifecycle.TrialRun and its real Outbox, and records every MLflow call
it makes (start, seconds, outcome) for the benchmark to count."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sweeps import tracking
from sweeps.lifecycle import TrialRun
from sweeps.outbox import deliver

# What a trial logs each epoch (sweeps/trainable.py REPORTED, the shapes dataset's set).
METRICS = ("train_loss", "val_bpd", "val_bpd_calibrated", "val_nelbo", "val_mse", "val_kl",
           "active_units", "sigma_x", "effective_beta", "val_shape_accuracy")  # fmt: skip
GRIDS = ("reconstructions", "samples", "interpolations")  # per image epoch, as viz draws them
# A trial's params: its resolved config as Config.flat() gives it (no torch import here).
PARAMS = {
    **{f"model.{k}": v for k, v in [("arch", "conv"), ("latent_dim", 16), ("sigma_x", 0.1),
       ("likelihood", "gaussian"), ("mean_activation", "none"), ("activation", "relu"),
       ("hidden_dims", [500, 500]), ("widths", None), ("refine", 0), ("init", "default")]},
    **{f"data.{k}": v for k, v in [("dataset", "shapes"), ("data_root", None),
       ("data_path", None), ("cache_dir", None), ("image_size", 32), ("crop", "center"),
       ("color", None), ("pixel_range", "unit"), ("binarize", True), ("val_fraction", 0.1),
       ("limit", None), ("download", False)]},
    **{f"train.{k}": v for k, v in [("epochs", 10), ("batch_size", 128), ("lr", 1e-3),
       ("kl_weight", 1.0), ("grad_clip", 1000.0), ("seed", 0), ("device", "cpu"),
       ("amp", True), ("iwae_samples", 64)]},
    "resources.cpu": 1, "resources.gpu": 0,
}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """One stage: `trials` processes at once, each `epochs` epochs of `epoch_s` seconds."""

    trials: int
    epoch_s: float
    epochs: int = 10
    image_every: int = 5  # grids every this many epochs, and at the last
    seconds: float = 60.0  # no epoch starts later than this after the trials start together
    drain_s: float = 120.0  # how long a trial's delivery at its end may wait for the server
    open_s: float = 120.0  # a trial that has not opened its run by then gives up


# One trial


def error_kind(err: BaseException) -> str:
    """What failed, as the load test counts it: 429, 5xx, 4xx, refused, timeout, connection.
    MLflow wraps transport errors in MlflowException, so the text tells them apart."""
    status = getattr(getattr(err, "response", None), "status_code", None)  # artifact PUTs
    text = f"{err} {err.__cause__ or ''}"
    found = re.search(r"too many (\d{3}) error responses|failed with error code (\d{3})", text)
    if status is None and found:
        status = int(found.group(1) or found.group(2))
    if status is None and hasattr(err, "get_http_status_code") and "API request to" not in text:
        status = err.get_http_status_code()  # the server answered with an error body
    if status is not None:
        return "429" if status == 429 else "5xx" if status >= 500 else "4xx"
    if "refused" in text:
        return "refused"
    if "timed out" in text.lower() or "timeout" in text.lower():
        return "timeout"
    return "connection"


CALLS = ("create_run", "search_runs", "get_run", "update_run", "log_batch", "log_artifacts",
         "set_terminated", "set_tag")  # fmt: skip


def instrument(calls: list[dict], phase: dict[str, str]) -> None:
    """Record every call this process makes through MlflowClient (TrialRun's and its Outbox's):
    start, seconds, and ok or the kind of error, which the caller then handles as usual.
    Patched on the class, in the trial's own process only."""
    from mlflow.tracking import MlflowClient

    for name in CALLS:
        call = getattr(MlflowClient, name)

        def timed(self, *args, _call=call, _name=name, **kwargs):
            start, outcome = time.time(), "ok"
            try:
                return _call(self, *args, **kwargs)
            except Exception as err:
                outcome = error_kind(err)
                raise
            finally:
                calls.append({"call": _name, "at": start, "s": time.time() - start,
                              "outcome": outcome, "phase": phase["now"]})  # fmt: skip

        setattr(MlflowClient, name, timed)


def trial(url: str, plan: Plan, stage: dict, index: int, barrier, out: Path) -> None:
    """One simulated trial, in a process of its own; writes out/trial-<index>.json, with the
    error that stopped it if one did."""
    # As sweeps.trainable.train_trial: fail fast, the Outbox keeps what failed.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    record, phase = {"index": index, "calls": [], "epochs_logged": 0, "image_epochs": 0}, {}
    instrument(record["calls"], phase)
    try:
        trial_life(url, plan, stage, index, barrier, out / f"checkpoint-{index}", record, phase)
    except BaseException as err:
        barrier.abort()  # the others need not wait for this one
        record["error"] = f"{type(err).__name__}: {err}"[:1000]
    (out / f"trial-{index}.json").write_text(json.dumps(record))


def trial_life(url, plan: Plan, stage: dict, index, barrier, checkpoint: Path, record, phase):
    """Open the run, wait for the others, log each epoch, end the run, deliver what is kept."""
    rng, opened, phase["now"] = random.Random(index), time.time(), "open"
    with time_limit(plan.open_s, "opening its run"):  # TrialRun alone would wait 10 minutes
        run = TrialRun(url, stage["experiment_id"], stage["parent"], None,
                       name=f"{index:03d} load", trial_id=f"{stage['name']}_{index:05d}",
                       params=PARAMS, tags={"ray.worker_pid": str(os.getpid())})  # fmt: skip
    record |= {"run_id": run.run_id, "open_s": time.time() - opened}
    try:
        barrier.wait(timeout=plan.open_s + 30)
    except Exception:  # a sibling that could not open its run: log anyway
        record["barrier_broken"] = True
    phase["now"], record["started"] = "epochs", time.time()
    time.sleep(rng.uniform(0, plan.epoch_s))  # trials are not in lockstep
    for epoch in range(1, plan.epochs + 1):
        if time.time() - record["started"] > plan.seconds:
            break  # the stage's time is up: this trial ends here, as under a time budget
        time.sleep(plan.epoch_s)  # training
        run.log_metrics({k: rng.random() for k in METRICS}, step=epoch)
        record["epochs_logged"] = epoch
        if epoch % plan.image_every == 0 or epoch == plan.epochs:
            log_grids(run, Path(stage["pngs"]), epoch)
            record["image_epochs"] += 1
        shutil.rmtree(checkpoint, ignore_errors=True)  # Tune keeps the latest
        checkpoint.mkdir()
        run.outbox.save(checkpoint)
    record["ended"], phase["now"] = time.time(), "end"
    record["pending_at_end"] = len(run.outbox.pending)
    run.end("FINISHED")  # flushes first
    phase["now"] = "deliver"
    record["counters"] = tracking.patiently(
        "delivering", deliver_kept, run, checkpoint, timeout=plan.drain_s
    )


class GaveUp(BaseException):
    """A trial's time limit ran out. Not an Exception: MLflow wraps those raised inside a
    request as a 500 and `patiently` retries those, so a TimeoutError would be waited out."""


@contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise GaveUp in this (trial) process once `seconds` have passed, even inside a call
    that waits for the server."""

    def expired(*_):
        raise GaveUp(f"{what} took over {seconds:g} s")

    before = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def deliver_kept(run: TrialRun, checkpoint: Path) -> dict[str, int]:
    """What the trial could not send by its end, delivered from its last checkpoint as the
    driver does; raises (and `patiently` retries) while some of it still waits."""
    from ray import tune

    if not checkpoint.exists():  # ended before its first epoch
        return run.outbox.counters()
    kept = run.outbox.counters()
    counters = deliver(run.client, run.run_id, tune.Checkpoint.from_directory(checkpoint), kept)
    if counters["mlflow_pending"]:
        raise ConnectionError(f"{counters['mlflow_pending']} log calls still pending")
    return counters


def log_grids(run: TrialRun, pngs: Path, epoch: int) -> None:
    """As sweeps.trainable._log_images: the grids by epoch (PNG + webp thumbnail) under
    images/, and the latest at fixed paths under grids/."""
    with tempfile.TemporaryDirectory() as folder:
        stepped, grids = Path(folder) / "stepped", Path(folder) / "grids"
        stepped.mkdir()
        shutil.copytree(pngs, grids)
        tracking.stepped_images(sorted(grids.glob("*.png")), epoch, stepped)
        run.log_files(stepped, tracking.IMAGES)
        run.log_files(grids, tracking.LATEST_GRIDS)


def grid_pngs(folder: Path, seed: int = 0) -> Path:
    """Three real PNG grids of ~40 KB (tiles of colour and noise, which PNG cannot squeeze)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in GRIDS:
        tiles = rng.integers(0, 256, (8, 8, 1, 1, 3)).repeat(16, 2).repeat(16, 3)
        image = tiles.transpose(0, 2, 1, 3, 4).reshape(128, 128, 3)
        noise = rng.integers(-24, 24, image.shape)
        pixels = np.clip(image + noise, 0, 255).astype("uint8")
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return folder
