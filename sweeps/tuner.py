"""A spec made into a Ray Tune run: what each trial asks for, the searcher (Optuna's TPE or
Tune's own random sampling), the scheduler (ASHA or FIFO), the stoppers and the run config;
or the saved run restored for --resume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from optuna.trial import FrozenTrial
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.stopper import Stopper

from sweeps import preflight
from sweeps.console import LOGGERS, EpochLines
from sweeps.lifecycle import EndTrialRuns, Stops, trial_epoch
from sweeps.searcher import STUDY_COPY, make_searcher
from sweeps.space import sampled_keys, trial_name
from sweeps.spec import SweepSpec
from sweeps.trainable import SweepContext, train_trial, trial_index
from sweeps.warm_start import study_file


def stops(spec: SweepSpec) -> Stops:
    """What may end this sweep's trials before their last epoch."""
    return Stops(
        spec.max_epochs,
        spec.scheduler,
        spec.epoch_budget,
        spec.time_budget,
        spec.metric,
        spec.mode,
    )


def check_restorable(spec: SweepSpec) -> None:
    """--resume needs Tune's saved state, of this user's own (restoring unpickles it)."""
    if not tune.Tuner.can_restore(spec.experiment_path):
        raise ValueError(f"--resume: no sweep '{spec.name}' to continue in {spec.storage_path}")
    preflight.check_own_state(spec.experiment_path)


def optuna_storage(spec: SweepSpec) -> str | None:
    """The Optuna study's SQLite URL (TPE sweeps only)."""
    if spec.search != "tpe":
        return None
    study = study_file(spec, spec.name)
    study.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{study}"


@dataclass(frozen=True)
class TrialNamer:
    """Tune's trial_name_creator: the name Tune shows and the trial's MLflow run takes,
    `07 z16 beta0.4 sigma0.12 learned` (sweeps.space.trial_name)."""

    sampled: tuple[str, ...]
    width: int

    def __call__(self, trial) -> str:
        index = trial_index(trial.config, trial.trial_id)
        return trial_name(index, trial.config, list(self.sampled), self.width)

    def folder(self, trial) -> str:
        """Tune's trial_dirname_creator: `trial_07_3b1e7_00007`, no spaces (paths and URIs
        on every storage take it) and sorted by index."""
        index = trial_index(trial.config, trial.trial_id)
        return f"trial_{index:0{self.width}d}_{trial.trial_id}"


def trial_namer(spec: SweepSpec) -> TrialNamer:
    return TrialNamer(tuple(sampled_keys(dict(spec.space))), max(2, len(str(spec.num_samples))))


def asha(max_epochs: int, grace_period: int) -> ASHAScheduler:
    """Asynchronous successive halving on epochs: rungs at grace_period x 3^k up to
    max_epochs; a trial goes on past a rung only in the best third of those that reached it."""
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_epochs,
        grace_period=min(grace_period, max_epochs),
        reduction_factor=3,
    )


class EpochBudget(tune.Callback, Stopper):
    """Stops the whole sweep once its trials have trained `epochs` epochs in all. Counted from
    every trial Tune knows at each step, restored ones included, so a resumed sweep goes on
    from what it had spent; and from each result between steps."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.trained: dict[str, int] = {}  # trial id -> its epochs

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        for trial in trials:
            self.trained[trial.trial_id] = max(
                self.trained.get(trial.trial_id, 0), trial_epoch(trial)
            )

    def __call__(self, trial_id: str, result: dict) -> bool:
        epoch = int(result.get("epoch", 0))
        self.trained[trial_id] = max(self.trained.get(trial_id, 0), epoch)
        return False

    def stop_all(self) -> bool:
        return sum(self.trained.values()) >= self.epochs


def _trainable(spec: SweepSpec, resources: dict[str, float], experiment_id: str, parent: str):
    base = spec.base if resources["gpu"] > 0 else spec.base.replace(device="cpu")
    context = SweepContext(
        base_config=base.to_dict(),
        tracking_uri=spec.tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent,
        max_epochs=spec.max_epochs,
        image_every=spec.image_every,
        cpus_per_trial=resources["cpu"],
        gpus_per_trial=resources["gpu"],
    )
    return tune.with_resources(tune.with_parameters(train_trial, context=context), resources)


def build_tuner(
    spec: SweepSpec,
    resources: dict[str, float],
    experiment_id: str,
    parent: str,
    warm_start: list[FrozenTrial] | None = None,
) -> tune.Tuner:
    """The sweep's Tuner; on --resume the one Tune saved (searcher, scheduler, stoppers and
    callbacks as they were pickled then), with a trainable that knows this driver's runs.
    `warm_start`: an earlier sweep's trials for a new TPE study (warm_start_trials)."""
    # Tune's own loggers would add TensorBoard's (and a warning when it is missing): only the
    # two its analysis reads, passed below (sweeps.console)
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    trainable = _trainable(spec, resources, experiment_id, parent)
    if spec.resume:
        # A trial that used up its retries stays failed, as Optuna (FAIL) and its run (FAILED)
        # say: only the unfinished ones go on.
        return tune.Tuner.restore(
            spec.experiment_path, trainable=trainable, param_space=dict(spec.space)
        )
    if (study_db := optuna_storage(spec)) is not None:
        remote = "://" in spec.storage_path  # the driver's disk may not outlive the sweep
        searcher = make_searcher(
            spec.name,
            study_db,
            spec.seed,
            spec.max_epochs,
            spec.searched,
            spec.modes,
            study_copy=spec.on_storage(spec.name, STUDY_COPY) if remote else None,
            warm_start=warm_start or (),
        )
        if spec.max_concurrent:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent)
    else:
        searcher = BasicVariantGenerator(
            random_state=spec.seed, max_concurrent=spec.max_concurrent or 0
        )
    scheduler = (
        asha(spec.max_epochs, spec.grace_period) if spec.scheduler == "asha" else FIFOScheduler()
    )
    budget = EpochBudget(spec.epoch_budget) if spec.epoch_budget else None
    return tune.Tuner(
        trainable,
        param_space=dict(spec.space),
        tune_config=tune.TuneConfig(
            # Two objectives are the searcher's alone (Tune ranks on one metric).
            metric=None if spec.multi_objective else spec.metric,
            mode=None if spec.multi_objective else spec.mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=spec.num_samples,
            time_budget_s=spec.time_budget,
            # A finished trial's worker process takes the next trial: torch, Ray and MLflow
            # are imported once per slot, not once per trial.
            reuse_actors=not spec.fresh_workers,
            trial_name_creator=(namer := trial_namer(spec)),
            trial_dirname_creator=namer.folder,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=spec.storage_path,
            verbose=0,  # sweeps.console prints a line per epoch instead of Tune's boxes
            stop=budget,
            callbacks=[
                EndTrialRuns(spec.tracking_uri, stops(spec)),
                EpochLines(stops(spec)),
                *(logger() for logger in LOGGERS),
                *([budget] if budget else []),
            ],
            # The two best epochs, and always the latest; a point of a front is a trial's
            # last. Tune saves its whole state (every trial's: O(trials)) whenever a trial has
            # made num_to_keep checkpoints since the last save, so that the state never names
            # a deleted one: with 1, at every epoch of every trial, which made a sweep's
            # driver time grow with the square of its trials (docs/BENCHMARKS.md, "Scale").
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=preflight.KEPT_CHECKPOINTS,
                checkpoint_score_attribute=None if spec.multi_objective else spec.metric,
                checkpoint_score_order=spec.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )
