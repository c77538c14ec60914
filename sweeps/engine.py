"""Run a sweep: Tune samples (or Optuna's TPE proposes), ASHA stops, Ray Tune schedules, MLflow
records, the registry keeps the best.

Each sweep script (sweeps/celeba.py, ...) holds a literal search space and base config and
calls `main`. The script may be a copy made by `ray submit` (only the file travels): all it
needs is the installed package. Who does what:

    spec.py       the flags and the space, checked once (SweepSpec)
    space.py      search-space checks and readable descriptions
    comparable.py which models compare (one key per sweep and registered model)
    cluster.py    what the cluster has and may start: each trial's resources
    tuner.py      the Tuner: searcher, scheduler, budgets, restore
    warm_start.py --warm-start: an earlier sweep's trials for TPE
    lifecycle.py  the MLflow runs, parent and trials: the only code that ends one
    finish.py     the best trial evaluated, registered, drawn and summarised
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import ray
from mlflow.exceptions import MlflowException
from ray import tune

from sweeps import comparable, console, plan, preflight, provenance, registry, searcher, tracking
from sweeps import tuner as tuners
from sweeps.cluster import Cluster
from sweeps.finish import Outcome, finish, print_summary, sweep_description
from sweeps.lifecycle import SweepInterrupted, SweepRuns
from sweeps.space import describe_space
from sweeps.spec import SweepSpec, build_parser, parse_spec
from sweeps.warm_start import warm_start_trials
from vae_core import ConfigError, load_splits
from vae_core.cli import end_without_collecting
from vae_core.data.arrow import PrepareError

__all__ = ["Outcome", "SweepInterrupted", "main", "run_sweep"]


def main(
    search_space: Mapping[str, Any],
    base_config: Mapping[str, Any] | Callable[[argparse.Namespace], Mapping[str, Any]],
    description: str = "",
    defaults: Mapping[str, Any] | None = None,
    argv: list[str] | None = None,
    add_flags: Callable[[argparse.ArgumentParser], None] | None = None,
) -> Outcome | None:
    """A sweep script's entry point: `base_config` may be a callable of the parsed flags,
    with the script's own flags added by `add_flags`. Exits 2 naming a bad input, 130 when
    interrupted (the sweep can be resumed)."""
    end_without_collecting()
    parser = build_parser(description, defaults or {}, add_flags)
    spec = None
    try:
        spec = parse_spec(search_space, base_config, argv, defaults, parser)
        return run_sweep(spec)
    except SweepInterrupted as err:
        parser.exit(130, f"{parser.prog}: {err}\n")
    except (ConfigError, ValueError, FileNotFoundError, PrepareError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except OSError as err:
        if not _no_space(err) or spec is None:
            raise
        # Tune's saves of the sweep's state (and the searcher's) fail the driver outright
        parser.exit(
            1,
            f"{parser.prog}: error: no space left on the device while writing "
            f"{err.filename or 'the sweep state'} (--storage-path {spec.storage_path}): free "
            f"space there, then continue with --resume --name {spec.name}\n",
        )
    except MlflowException as err:  # a login or a permission the tracking server refused
        if (said := tracking.refusal(err)) is None:
            raise
        parser.exit(2, f"{parser.prog}: error: {said}\n")


def run_sweep(spec: SweepSpec) -> Outcome | None:
    """The story of a sweep: check what is cheap to check, prepare, run, settle, finish.
    With --dry-run only its plan is printed (None)."""
    if spec.dry_run:
        print(plan.plan(spec))
        return None
    tracking.quiet_downloads()
    console.quiet_unstarted_trials()
    runs = SweepRuns(spec.tracking_uri, spec.experiment, spec.name)
    if (kept := runs.look_up(spec.resume)) is not None:  # the name, before anything else
        spec = spec.resumed(kept)
        tuners.check_restorable(spec)
    registry.check_name(spec.tracking_uri, spec.registry_name, comparable.key(spec.base))
    warm_start = warm_start_trials(spec)  # before any compute: it may be missing
    print(f"vae-sweep: preparing {spec.dataset} (once per node)", file=sys.stderr)
    load_splits(spec.base)  # readable here, and decoded into the node cache before any trial
    if not spec.resume:
        preflight.check_storage(spec.storage_path, spec.num_samples, spec.base)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(log_to_driver=True, include_dashboard=False)
    cluster = Cluster.look(started_ray)
    resources = cluster.trial_resources(spec.cpus_per_trial, spec.gpus_per_trial)
    preflight.check_data_on_nodes(spec.base)

    parent = runs.open(_parent_params(spec), _parent_tags(spec), spec.kept())
    if not spec.resume and (script := provenance.script()) is not None:
        runs.client.log_artifact(parent, str(script), "sweep")  # the space as written
    study_db = tuners.optuna_storage(spec)
    try:
        started = time.monotonic()
        tuner = tuners.build_tuner(spec, resources, runs.experiment_id, parent, warm_start)
        results = tuner.fit()
        trials = tune.ExperimentAnalysis(results.experiment_path).trials
        expected = None if spec.budgeted else spec.num_samples
        logs = runs.settle(trials, tuners.stops(spec), time.monotonic() - started, expected)
        if study_db is not None:
            searcher.tell_held_back(spec.name, study_db)
            stopped = {t.trial_id for t in trials if t.status == "TERMINATED"}
            searcher.end_unfinished(spec.name, study_db, stopped)
        outcome = finish(spec, results, parent, study_db, logs, resources, cluster.joined)
    except SweepInterrupted:
        raise  # the runs are ended KILLED, waiting for --resume
    except BaseException as err:
        if not _no_space(err) and preflight.out_of_space(spec.storage_path):
            # e.g. Tune reading back the error file it cut short: the cause, not the symptom
            full = OSError(errno.ENOSPC, "No space left on device", spec.storage_path)
            runs.end("FAILED", full)
            raise full from err
        runs.end("FAILED", err)
        raise
    counts = runs.outcomes()
    outcome.failed = runs.failures()  # why, in the summary and on the sweep's run
    runs.end(
        "FINISHED",
        note=sweep_description(outcome, counts, spec.command),
        tags={tracking.OUTCOMES: json.dumps(counts)},
    )
    print_summary(outcome, spec.registry_name)
    return outcome


def _no_space(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno == errno.ENOSPC


def _parent_params(spec: SweepSpec) -> dict[str, Any]:
    return {
        **{f"space.{k}": v for k, v in describe_space(dict(spec.space)).items()},
        **{f"base.{k}": v for k, v in spec.base.flat().items()},
        "num_samples": spec.num_samples,
        "max_epochs": spec.max_epochs,
        "grace_period": spec.grace_period,
        "search": spec.search,
        "scheduler": spec.scheduler,
        "seed": spec.seed,
        "objective": spec.objective,
        "metric": spec.metric,
        **({"warm_start": spec.warm_start} if spec.warm_start else {}),
    }


def _parent_tags(spec: SweepSpec) -> dict[str, str]:
    return {
        "dataset": spec.dataset,
        registry.KEY: comparable.key(spec.base),
        "vae_sweep.command": spec.command,
        tracking.NOTE: f"Sweep {spec.name}, running: `{spec.command}`.",
        **provenance.tags(),
    }
