"""Optuna's TPE behind Ray Tune, told the truth about trials that ASHA stops.

Ray's OptunaSearch records a trial that the scheduler stopped early as COMPLETE with its early,
worse value, so TPE learns from truncated results as if they were final. Here a trial that
ended before the sweep's epoch budget is told to Optuna as PRUNED: Optuna keeps its last
reported value (TPE ranks pruned trials by it, below complete ones), and a trial that failed is
FAIL, as before.
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
        # The last val_bpd was already reported as an intermediate value (on_trial_result).
        self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
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
