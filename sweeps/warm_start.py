"""--warm-start SWEEP: an earlier sweep's finished and early-stopped trials, told to a new
sweep's TPE before it proposes. They come from the earlier sweep's Optuna study when it has one
(a --search tpe sweep: beside its trials, or the copy beside its state on remote storage), and
otherwise from its MLflow runs (a random sweep): each trial run's sampled params, its outcome
tag and its metric's history by epoch, as the study would have kept them.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import optuna
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search.optuna import OptunaSearch

from sweeps.searcher import (
    STUDY_COPY,
    earlier_trials,
    ended_trial,
    fetch_study_copy,
    in_space,
)
from sweeps.spec import SweepSpec
from sweeps.tracking import OUTCOME, PARENT, ROLE, SWEEP_NAME, search_all

# a trial run's outcome tag -> how the study tells it (PruningAwareOptunaSearch: a trial that
# ended before its last epoch is PRUNED, whatever stopped it)
STATES = {
    "completed": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "stopped": TrialState.PRUNED,
}


def study_file(spec: SweepSpec, name: str) -> Path:
    """Sweep `name`'s Optuna study: beside the trials when the storage is local, in the
    user's cache when it is remote (the study lives on the driver, and a copy travels with the
    sweep's state: sweeps.searcher)."""
    if "://" not in spec.storage_path:
        return Path(spec.on_storage(name)) / "optuna.db"
    return Path.home() / ".cache" / "vae-sweep" / "optuna" / name / "optuna.db"


def warm_start_trials(spec: SweepSpec) -> list[FrozenTrial]:
    """--warm-start SWEEP: that sweep's finished and early-stopped trials in this space, from
    its study, else from its MLflow runs in this sweep's --tracking-uri. Raises ValueError,
    naming the flag, when there is none to tell."""
    if spec.warm_start is None or spec.resume:  # a resumed searcher has told them already
        return []
    study = study_file(spec, spec.warm_start)
    with tempfile.TemporaryDirectory() as folder:
        if not study.exists() and "://" in spec.storage_path:
            copy = Path(folder) / STUDY_COPY
            if fetch_study_copy(spec.on_storage(spec.warm_start, STUDY_COPY), copy):
                study = copy
        if study.exists():
            trials, left_out = earlier_trials(
                spec.warm_start, f"sqlite:///{study}", dict(spec.space), spec.modes
            )
            source = "its Optuna study"
        else:
            trials, left_out = logged_trials(
                spec.tracking_uri, spec.warm_start, dict(spec.space), spec.objective, spec.searched
            )
            source = "its MLflow runs"
    others = f"; {left_out} failed, unfinished or outside this space left out" if left_out else ""
    print(
        f"vae-sweep: starting TPE from {len(trials)} trials of sweep {spec.warm_start} "
        f"({source}{others})",
        file=sys.stderr,
    )
    return trials


def logged_trials(
    tracking_uri: str, sweep: str, space: dict, objective: str, metrics: list[str]
) -> tuple[list[FrozenTrial], int]:
    """The finished and early-stopped trials of sweep `sweep` as its MLflow runs record them,
    those in `space` (a Tune space); and how many others it had. A trial's values are its
    `metrics` at its last epoch, and one of one objective keeps its curve, as the study does."""
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    query = f"tags.`{ROLE}` = 'sweep' and tags.`{SWEEP_NAME}` = '{sweep}'"
    parents = search_all(client, experiments, query) if experiments else []
    if not parents:
        raise ValueError(
            f"--warm-start {sweep}: no sweep of that name, neither its Optuna study nor its "
            f"MLflow runs in {tracking_uri}; pass the --name of a finished sweep, with its "
            "--storage-path or --tracking-uri"
        )
    parent = parents[0]
    if (was := parent.data.params.get("objective")) != objective:
        raise ValueError(
            f"--warm-start {sweep}: that sweep's objective was {was}, this one's is {objective}; "
            "warm-start from a sweep of the same --objective"
        )
    runs = search_all(
        client,
        [parent.info.experiment_id],
        f"tags.`{PARENT}` = '{parent.info.run_id}' and tags.`{ROLE}` = 'trial'",
    )
    distributions = OptunaSearch.convert_search_space(space)
    told = [t for run in runs if (t := _trial(client, run, distributions, metrics)) is not None]
    kept = in_space(told, distributions, sweep)
    return kept, len(runs) - len(kept)


def _trial(client: MlflowClient, run, distributions: dict, metrics: list[str]):
    """A trial run as Optuna would have kept it, or None: failed, lost, interrupted, or a
    param this space does not have."""
    state = STATES.get(run.data.tags.get(OUTCOME, ""))
    by_field = {k.partition(".")[2]: v for k, v in run.data.params.items()}  # model.lr -> lr
    params = {k: _value(d, by_field.get(k)) for k, d in distributions.items()}
    if state is None or any(v is None for v in params.values()):
        return None
    curves = [
        {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
        for name in metrics
    ]
    if not all(curves):
        return None
    return ended_trial(state, curves, params, distributions)


def _value(distribution, logged: str | None):
    """An MLflow param (a string) as the distribution's value, or None."""
    if logged is None:
        return None
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return next((c for c in distribution.choices if str(c) == logged), None)
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return int(logged)
    return float(logged)
