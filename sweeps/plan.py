"""`--dry-run`: what a sweep would do, printed before anything starts (no Ray, no MLflow, no
data): its trials, what each asks for, the epochs it expects to train, and with
`--epoch-seconds` (and `--price-per-hour`) README's estimate of its time and cost.

    time ~ max(N x e x t_epoch / slots, E x t_epoch)        cost ~ time x price per hour

e is the mean epochs of a trial: --max-epochs E without early stopping; with ASHA (reduction
factor 3) a third of the trials goes on at each rung (grace period g, 3g, 9g, ... below E), and
at least one: the first trial to reach a rung always goes on, so some trial trains all E
epochs, and no sweep is shorter than that trial.
"""

from __future__ import annotations

import math
import os

from sweeps.space import describe_space, grid_values
from sweeps.spec import SweepSpec

REDUCTION = 3  # ASHA's reduction factor (sweeps.tuner)
TPE_STARTUP = 10  # Optuna's TPESampler draws its first 10 trials at random


def rungs(max_epochs: int, grace_period: int) -> list[int]:
    """ASHA's milestones: g, 3g, 9g, ... below max_epochs."""
    found, epoch = [], grace_period
    while epoch < max_epochs:
        found.append(epoch)
        epoch *= REDUCTION
    return found


def expected_epochs(
    max_epochs: int, grace_period: int, scheduler: str, trials: int | None = None
) -> float:
    """The mean epochs a trial trains: all of them under FIFO; under ASHA 1/3 of the trials
    go on past each rung, and of `trials` at least one (the first to reach a rung always goes
    on: promotions are asynchronous, so a little more in practice)."""
    if scheduler != "asha":
        return float(max_epochs)
    total, reached, previous = 0.0, 1.0, 0
    floor = 1 / trials if trials else 0.0  # one trial of them, as a share
    for milestone in rungs(max_epochs, min(grace_period, max_epochs)):
        total += reached * (milestone - previous)
        reached, previous = max(reached / REDUCTION, floor), milestone
    return total + reached * (max_epochs - previous)


def trial_count(spec: SweepSpec) -> int:
    """num_samples, times every grid's size (Tune walks each grid num_samples times)."""
    grids = [len(v) for v in map(grid_values, spec.space.values()) if v is not None]
    return spec.num_samples * math.prod(grids)


def local_slots(spec: SweepSpec) -> tuple[int, str]:
    """Trials at once on this machine, and why."""
    cpus = os.cpu_count() or 1
    slots, why = max(1, math.floor(cpus / spec.cpus_per_trial)), f"{cpus} CPUs"
    if spec.gpus_per_trial:
        import torch

        gpus = torch.cuda.device_count()
        by_gpu = math.floor(gpus / spec.gpus_per_trial) if gpus else 0
        slots, why = min(slots, by_gpu), f"{cpus} CPUs, {gpus} GPUs"
    if spec.max_concurrent:
        slots, why = min(slots, spec.max_concurrent), f"--max-concurrent {spec.max_concurrent}"
    return slots, why


def plan(spec: SweepSpec) -> str:
    trials = trial_count(spec)
    e = expected_epochs(spec.max_epochs, spec.grace_period, spec.scheduler, trials)
    if spec.search == "random":
        how = "drawn at random by Tune"
    elif trials <= TPE_STARTUP:
        how = f"all at random: Optuna's TPE models results after its first {TPE_STARTUP}"
    else:
        how = f"Optuna's TPE: the first {TPE_STARTUP} at random, then proposed from results"
    gpus = (
        "GPUs decided when the cluster is seen (1 if a node has one)"
        if spec.gpus_per_trial is None
        else f"{spec.gpus_per_trial:g} GPU"
    )
    milestones = ", ".join(map(str, rungs(spec.max_epochs, spec.grace_period)))
    stops = (
        f"ASHA may stop it after epoch {milestones}"
        if spec.scheduler == "asha"
        else "every trial trains all its epochs (FIFO)"
    )
    lines = [
        f"vae-sweep: dry run of sweep {spec.name} (nothing started)",
        f"  trials       {trials}: {how}",
        f"               trial i trains with seed {spec.seed} + i, over this space:",
        *(f"    {key:<12} {domain}" for key, domain in describe_space(dict(spec.space)).items()),
        f"  each trial   up to {spec.max_epochs} epochs; {stops}",
        f"  resources    per trial {spec.cpus_per_trial:g} CPU, {gpus}",
        f"  objective    {spec.objective}, chosen on validation; registered as "
        f"{spec.registry_name}",
        f"  epochs       about {trials * e:.0f} in all ({e:.1f} per trial on average)",
    ]
    slots, why = local_slots(spec)
    if spec.epoch_seconds is not None:
        busy = trials * e / max(slots, 1)  # epochs of one slot, every slot busy
        hours = max(busy, spec.max_epochs) * spec.epoch_seconds / 3600  # or one whole trial
        estimate = f"  time         about {_duration(hours)} with {slots} trials at once ({why})"
        if spec.price_per_hour is not None:
            estimate += (
                f"; cost about {hours * spec.price_per_hour:.2f} at {spec.price_per_hour:g}/h"
            )
        lines.append(estimate)
    else:
        lines.append(
            "  time         give --epoch-seconds (a trial's epoch_seconds in MLflow) for an "
            "estimate"
        )
    lines.append(f"  data         {spec.base.data.dataset}, {spec.base.image_size} px")
    return "\n".join(lines)


def _duration(hours: float) -> str:
    minutes = hours * 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{hours:.1f} h"
