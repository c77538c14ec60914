"""Optuna's TPE behind Ray Tune, told the truth about trials that ASHA stops.

Ray's OptunaSearch records a trial that the scheduler stopped early as COMPLETE with its early,
worse value, so TPE learns from truncated results as if they were final. Here a trial that
ended before the sweep's epoch budget is told to Optuna as PRUNED: Optuna keeps its last
reported value (TPE ranks pruned trials by it, below complete ones), and a trial that failed is
FAIL, as before. The result that made ASHA stop a trial reaches the searcher only through
on_trial_complete, not on_trial_result: it is reported here, so the pruned trial's value is its
last epoch's, not the one before.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch


class PruningAwareOptunaSearch(OptunaSearch):
    def __init__(self, *args, max_iterations: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._max_iterations = max_iterations  # epochs a trial runs unless stopped

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        stopped_early = (
            not error
            and result is not None
            and result.get(TRAINING_ITERATION, 0) < self._max_iterations
        )
        if not stopped_early or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)
            return
        trial = self._ot_trials[trial_id]
        trial.report(result[self._metric], result[TRAINING_ITERATION])  # the stopping result
        self._ot_study.tell(trial, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def make_searcher(
    study_name: str, storage_url: str, seed: int, max_epochs: int, metric: str = "val_bpd"
) -> PruningAwareOptunaSearch:
    """TPE, seeded, on a persistent study named after the sweep (two sweeps never merge)."""
    return PruningAwareOptunaSearch(
        metric=metric,
        mode="min",
        study_name=study_name,
        storage=optuna.storages.RDBStorage(storage_url),
        sampler=optuna.samplers.TPESampler(seed=seed),
        max_iterations=max_epochs,
    )


def fail_unfinished(study_name: str, storage_url: str) -> None:
    """Tell FAIL for trials a dead driver left RUNNING in the study (after --resume)."""
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    for trial in study.get_trials(deepcopy=False, states=[TrialState.RUNNING]):
        study.tell(trial.number, state=TrialState.FAIL)
