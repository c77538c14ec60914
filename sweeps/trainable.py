"""The Ray Tune trainable: one trial = one vae_core.fit, reported and checkpointed each epoch.

The function gets the sampled hyperparameters from Tune and everything else from a
`SweepContext` (tune.with_parameters). It resumes from `tune.get_checkpoint()` after a failure,
continuing its own MLflow run, whose id travels in the checkpoint.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from sweeps import checkpoints, console, outbox, tracking
from sweeps.lifecycle import TrialRun, failed
from sweeps.searcher import TRIAL_INDEX
from sweeps.tracking import DEVICE, DIVERGED, OUT_OF_MEMORY, RESTARTED
from vae_core import Config, DivergenceError, fit, load_splits, read_checkpoint
from vae_core.checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointError
from vae_core.trainer import TrainState, select_device

REPORTED = (
    "train_loss",
    "val_bpd",
    "val_bpd_calibrated",
    "val_nelbo",
    "val_mse",
    "val_kl",
    "active_units",
    "sigma_x",
    "effective_beta",
    "val_shape_accuracy",  # the factor scores, where the data has factors (shapes)
    "val_factor_r2",
    "val_mig",
)


@dataclass(frozen=True)
class SweepContext:
    """What every trial of a sweep shares, shipped once through the object store."""

    base_config: dict[str, Any]  # nested vae_core config, paths already absolute
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    max_epochs: int
    image_every: int  # log image grids every this many epochs (and at the end)
    cpus_per_trial: float
    gpus_per_trial: float = 0.0

    def trial_config(self, params: dict[str, Any], index: int) -> Config:
        """base config + the sampled params + the sweep's epoch budget, seeded with the
        sweep's seed + the trial's index (unless the space samples the seed): two trials
        that draw the same point are two draws of training, not one run twice."""
        config = Config.from_dict(self.base_config)
        params = {k: v for k, v in params.items() if k != TRIAL_INDEX}
        seed = params.get("seed", config.train.seed + index)
        return config.replace(**{**params, "seed": seed}, epochs=self.max_epochs)


def trial_index(params: dict[str, Any], trial_id: str) -> int:
    """The trial's number in its sweep, from 0, kept by a restored sweep: the Optuna trial's
    (sweeps.searcher puts it in the params), else the counter of Tune's own trial ids
    (`3b1e7_00004` -> 4)."""
    if TRIAL_INDEX in params:
        return int(params[TRIAL_INDEX])
    _, _, counter = trial_id.rpartition("_")
    if not counter.isdigit():
        raise ValueError(f"trial id {trial_id!r}: expected <experiment>_<index>")
    return int(counter)


def own_threads(context: SweepContext) -> int:
    """One torch thread per whole CPU the trial asked for."""
    return max(1, math.floor(context.cpus_per_trial))


def threads(context: SweepContext) -> int:
    """Torch threads for this CPU trial: its own CPUs, plus its share of those Ray holds for no
    one when its node is the whole cluster (a laptop sweep). A trial left alone at the end of a
    sweep then trains on the cores the finished trials left idle instead of on one. Asked
    again after every epoch: a trial Tune starts meanwhile takes its CPU back at the next."""
    own = own_threads(context)
    if context.gpus_per_trial > 0 or len([n for n in ray.nodes() if n["Alive"]]) != 1:
        return own  # a GPU trial's speed is the GPU's; other nodes' idle CPUs are not here
    return own + idle_share(ray.cluster_resources(), ray.available_resources(), own)


def idle_share(total: dict[str, float], available: dict[str, float], own: int) -> int:
    """Whole idle CPUs for one trial holding `own`, split in proportion among the CPUs in use
    (the sweep's trials: each holds the same)."""
    idle = available.get("CPU", 0.0)
    used = total.get("CPU", 0.0) - idle
    return math.floor(idle * own / used) if used >= own else 0


def train_trial(params: dict[str, Any], context: SweepContext) -> None:
    # Its own CPUs for the first epoch: while a sweep starts, the CPUs idle now are the next
    # trials' (threads() is asked after each epoch).
    torch.set_num_threads(own_threads(context))
    console.quiet_trial_logs()
    # A log call fails fast when the server is away (the Outbox keeps it) instead of blocking
    # training through MLflow's own minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    entered_at, spent = time.time(), {}  # seconds not spent training, by part (benchmarks)
    tune_ctx = tune.get_context()
    config = context.trial_config(params, trial_index(params, tune_ctx.get_trial_id()))
    resume, restarted, kept = None, "", Path(tempfile.mkdtemp(prefix="restored-"))
    if (ckpt := tune.get_checkpoint()) is not None:
        resume, restarted = _restored(ckpt, kept, tune_ctx.get_trial_name())
    # None: found by the trial's id (a restart from scratch, or before its first checkpoint)
    run_id = resume.extra.get("mlflow_run_id") if resume is not None else None
    with timed(spent, "open_run"):
        run = TrialRun(
            context.tracking_uri,
            context.experiment_id,
            context.parent_run_id,
            run_id,
            name=tune_ctx.get_trial_name(),
            trial_id=tune_ctx.get_trial_id(),
            tags={
                "ray.node_id": ray.get_runtime_context().get_node_id(),
                "ray.worker_pid": str(os.getpid()),
                DEVICE: device_used(config, context.gpus_per_trial),
                **({RESTARTED: restarted[:5000]} if restarted else {}),
            },
            params={
                **config.flat(),
                "resources.cpu": context.cpus_per_trial,
                "resources.gpu": context.gpus_per_trial,
            },
        )
    run.restore_outbox(kept)
    shutil.rmtree(kept, ignore_errors=True)
    logged = run.steps_logged("val_bpd")  # epochs a restart trains again: not logged twice
    drawn = run.image_steps_logged()  # and their grids, not drawn twice
    _fail_again_at_once(run)
    with timed(spent, "load_data"):
        data = load_splits(config, progress=False)  # the node cache: prepared once per node

    def on_epoch_end(state: TrainState) -> None:
        state.extra["mlflow_run_id"] = run.run_id
        record = state.history[-1]
        last = state.epoch == context.max_epochs  # Tune stops the trial at this report
        with timed(spent, "log"):
            metrics = {k: record[k] for k in REPORTED if record.get(k) is not None}
            if state.epoch not in logged:
                run.log_metrics(metrics, step=state.epoch)
            if (state.epoch % context.image_every == 0 or last) and state.epoch not in drawn:
                _log_images(run, state, data)
        timings = {
            "epoch_seconds": record["epoch_seconds"],
            "entered_at": entered_at,
            "reported_at": time.time(),
            "train_images": len(data.train),
            **{f"overhead_{part}_s": seconds for part, seconds in spent.items()},
        }
        with tempfile.TemporaryDirectory() as folder, _naming_a_full_disk(folder, state.epoch):
            with timed(spent, "checkpoint"):
                state.save(Path(folder) / CHECKPOINT_NAME)
                run.outbox.save(Path(folder))  # what the server has not got yet travels along
            report = {"epoch": state.epoch, **metrics, **run.outbox.counters(), **timings}
            report["mlflow_run_id"] = run.run_id
            report["trial_name"] = tune_ctx.get_trial_name()  # its run's name (plots, tables)
            report["threads"] = torch.get_num_threads()  # what trained this epoch
            # Tune counts reports from the checkpoint it restored; ASHA's rungs are epochs,
            # also when the trial restarted from an earlier one (a damaged checkpoint).
            report["training_iteration"] = state.epoch
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))
        torch.set_num_threads(threads(context))  # for the next epoch

    try:
        fit(config, data, on_epoch_end=on_epoch_end, resume_from=resume)
    except Exception as err:
        memory = out_of_memory(err, config, device_used(config, context.gpus_per_trial))
        tags = failed(f"TrialOutOfMemory: {memory}" if memory else f"{type(err).__name__}: {err}")
        if isinstance(err, DivergenceError):
            tags[DIVERGED] = str(err)[:5000]
        if memory:
            tags[OUT_OF_MEMORY] = memory[:5000]
        run.end("FAILED", tags)
        if memory:
            raise TrialOutOfMemory(memory) from err  # the allocator's words, and what to do
        raise
    run.end("FINISHED")  # rarely reached: the driver's CloseTrialRuns ends the run


class TrialOutOfMemory(MemoryError):
    """The trial's model or batch did not fit in its memory; the message says which and what
    to change."""


# What torch says when an allocation fails: the CPU allocator, CUDA's, or Python's MemoryError
_NO_MEMORY = ("can't allocate memory", "out of memory", "cannot allocate memory")


def out_of_memory(err: BaseException, config: Config, device: str) -> str | None:
    """The message of a failed trial that ran out of memory (None for other failures): what
    the allocator said, the config's size and what to change."""
    said = " ".join(str(err).split()) or type(err).__name__
    said = re.sub(r"^\[enforce fail at [^\]]*\] err == 0\. ", "", said)  # c10's prefix
    if not (
        isinstance(err, MemoryError | torch.OutOfMemoryError)
        or (isinstance(err, RuntimeError) and any(s in said.lower() for s in _NO_MEMORY))
    ):
        return None
    m, t = config.model, config.train
    return (
        f"out of memory on {device}: {said[:500]} (arch={m.arch}, latent_dim={m.latent_dim}, "
        f"batch_size={t.batch_size}, image_size={config.image_size}). Narrow the search "
        "space's corner (latent_dim, widths, batch_size) or give each trial more memory "
        "(--gpus-per-trial, a larger node)"
    )


def _fail_again_at_once(run: TrialRun) -> None:
    """Tune retries every failed trial. A diverged one resumed from its last checkpoint (exact
    RNG state) would only diverge again, and one that ran out of memory would again: the
    retry fails at once, saying why."""
    if diverged := run.tags.get(DIVERGED):
        err = DivergenceError(f"{diverged} (not retried: it would diverge again)")
        run.end("FAILED", failed(f"DivergenceError: {err}"))
        raise err
    if memory := run.tags.get(OUT_OF_MEMORY):
        err = TrialOutOfMemory(f"{memory} (not retried: it would run out of memory again)")
        run.end("FAILED", failed(f"TrialOutOfMemory: {err}"))
        raise err


def _restored(ckpt: tune.Checkpoint, kept: Path, trial: str) -> tuple[Checkpoint | None, str]:
    """The checkpoint Tune restores the trial from, with what it had not delivered copied into
    `kept`. When its file is damaged: the trial's newest earlier checkpoint that reads, or
    None (epoch 0), and the line that says so (printed, and tagged on the trial's run)."""
    with ckpt.as_directory() as folder:
        if (Path(folder) / outbox.FOLDER).exists():  # the newest logs, whole file or not
            shutil.copytree(Path(folder) / outbox.FOLDER, kept / outbox.FOLDER)
        try:
            return read_checkpoint(Path(folder) / CHECKPOINT_NAME), ""
        except CheckpointError as err:
            error = err
    resume, said = checkpoints.restart_point(ckpt, error, trial)
    print(said, file=sys.stderr, flush=True)
    return resume, f"{said}; the epochs its run holds already are not logged again"


def device_used(config: Config, gpus: float) -> str:
    """Where this trial trains, as vae_core's trainer picks it, and why when a GPU it was given
    goes unused: `cuda:0`, `cpu`, `cpu (1 GPU given, but torch sees no CUDA device)`."""
    device = select_device(config.train.device)
    if device.type == "cuda":
        return f"cuda:{device.index or 0}"
    if gpus > 0 and not torch.cuda.is_available():
        return f"cpu ({gpus:g} GPU given, but torch sees no CUDA device)"
    return "cpu"


@contextmanager
def timed(spent: dict[str, float], part: str) -> Iterator[None]:
    """Add the seconds the block takes to spent[part]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        spent[part] = spent.get(part, 0.0) + time.perf_counter() - start


@contextmanager
def _naming_a_full_disk(staging: str, epoch: int) -> Iterator[None]:
    """A full disk while checkpointing fails the trial with where and what to do: Tune
    retries it from its previous checkpoint, and once its retries are spent it stays failed;
    --resume goes on with the trials not yet ended."""
    try:
        yield
    except OSError as err:
        if err.errno != errno.ENOSPC and "No space left on device" not in str(err):
            raise  # (pyarrow's copies to the storage say so only in the message)
        storage = tune.get_context().get_storage().trial_fs_path
        raise OSError(
            errno.ENOSPC,
            f"no space left on the device while saving the checkpoint of epoch {epoch} "
            f"(staged in {staging}, stored under {storage}): free space there; if the "
            "sweep stops, --resume goes on with its unfinished trials",
        ) from err


def _log_images(run: TrialRun, state: TrainState, data) -> None:
    """The validation grids (reconstructions, samples, interpolations): by epoch for the UI's
    image charts, and as the trial's latest at fixed paths for Compare."""
    from vae_core import viz

    with tempfile.TemporaryDirectory() as folder:
        grids = Path(folder) / "grids"
        grids.mkdir()
        pngs = viz.model_grids(state.model, data.val.images, grids, seed=state.config.train.seed)
        stepped = Path(folder) / "stepped"
        stepped.mkdir()
        tracking.stepped_images(pngs, state.epoch, stepped)
        run.log_files(stepped, tracking.IMAGES)
        run.log_files(grids, tracking.LATEST_GRIDS)
