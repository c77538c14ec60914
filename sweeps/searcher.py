"""Optuna's TPE behind Ray Tune, told the truth about trials that ASHA stops.

Ray's OptunaSearch records a trial that the scheduler stopped early as COMPLETE with its early,
worse value, so TPE learns from truncated results as if they were final. Here a trial that
ended before the sweep's epoch budget is told to Optuna as PRUNED: Optuna keeps its last
reported value (TPE ranks pruned trials by it, below complete ones), and a trial that failed is
FAIL, as before. The result that made ASHA stop a trial reaches the searcher only through
on_trial_complete, not on_trial_result: it is reported here, so the pruned trial's value is its
last epoch's, not the one before.

The study is an SQLite file on the driver. When the sweep's state is on remote storage (s3://)
the driver's disk may not outlive it (a new head, a KubeRay emptyDir): each time Tune saves the
searcher, a consistent copy of the study goes beside it, into the folder Tune uploads, and a
restore on a driver without the study fetches that copy back from the storage.
"""

from __future__ import annotations

import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import optuna
import pyarrow.fs as pafs
from optuna.trial import TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

STUDY_COPY = "optuna-study.db"  # beside the searcher's state in the sweep's folder
TRIAL_INDEX = "trial_index"  # the Optuna trial's number, in each suggested config


class PruningAwareOptunaSearch(OptunaSearch):
    def __init__(self, *args, max_iterations: int, study_copy: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_iterations = max_iterations  # epochs a trial runs unless stopped
        self._study_copy = study_copy  # URI of the study's copy beside the sweep's state

    def _study_file(self) -> Path | None:
        url = getattr(self._storage, "url", "") or ""
        return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None

    def save(self, checkpoint_path: str) -> None:
        super().save(checkpoint_path)
        if self._study_copy and (study := self._study_file()) is not None:
            _copy_sqlite(study, Path(checkpoint_path).with_name(STUDY_COPY))

    def restore(self, checkpoint_path: str) -> None:
        """Tune's saved searcher; and on a driver whose study has fewer trials than the copy
        saved with it (a new head: restoring made it an empty one), the copy. The copy was
        taken with the pickled state, so the two agree."""
        super().restore(checkpoint_path)
        if not self._study_copy or (study := self._study_file()) is None:
            return
        with tempfile.TemporaryDirectory() as folder:
            saved = Path(folder) / STUDY_COPY
            fs, path = pafs.FileSystem.from_uri(self._study_copy)
            if fs.get_file_info(path).type == pafs.FileType.NotFound:
                return
            pafs.copy_files(path, str(saved), source_filesystem=fs)
            if _trials_in(study) < _trials_in(saved):  # in place: the study has it open
                _backup(saved, study)

    def suggest(self, trial_id: str) -> dict | None:
        """The proposed params, and the Optuna trial's number (from 0, kept in the study): the
        trial seeds its training with it."""
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            config[TRIAL_INDEX] = self._ot_trials[trial_id].number
        return config

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
        if not isinstance(self._metric, list):  # Optuna keeps no curve of several objectives
            trial.report(result[self._metric], result[TRAINING_ITERATION])  # the stopping one
        self._ot_study.tell(trial, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def _trials_in(study: Path) -> int:
    """Trials an Optuna SQLite file holds (0 when it has no study yet)."""
    if not study.exists():
        return 0
    with closing(sqlite3.connect(study)) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        except sqlite3.OperationalError:  # no tables
            return 0


def _backup(source: Path, target: Path) -> None:
    """Every page of SQLite file `source` into `target` (SQLite's backup API: consistent)."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of an SQLite file (its backup API), written then renamed: Tune may
    upload the folder at any time."""
    partial = target.with_name(f".{target.name}.partial")
    _backup(source, partial)
    partial.replace(target)


def make_searcher(
    study_name: str,
    storage_url: str,
    seed: int,
    max_epochs: int,
    metrics: list[str] | None = None,
    modes: list[str] | None = None,
    study_copy: str | None = None,
) -> PruningAwareOptunaSearch:
    """TPE, seeded, on a persistent study named after the sweep (two sweeps never merge),
    optimising `metrics` in `modes` (default: minimise val_bpd; two make it Optuna's
    multi-objective TPE); with `study_copy` (its URI beside the sweep's state on remote
    storage), the study travels with the state."""
    metrics = metrics or ["val_bpd"]
    modes = modes or ["min"] * len(metrics)
    several = len(metrics) > 1
    return PruningAwareOptunaSearch(
        metric=metrics if several else metrics[0],
        mode=modes if several else modes[0],
        study_name=study_name,
        storage=optuna.storages.RDBStorage(storage_url),
        sampler=optuna.samplers.TPESampler(seed=seed),
        max_iterations=max_epochs,
        study_copy=study_copy,
    )


def fail_unfinished(study_name: str, storage_url: str) -> None:
    """Tell FAIL for trials a dead driver left RUNNING in the study (after --resume)."""
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    for trial in study.get_trials(deepcopy=False, states=[TrialState.RUNNING]):
        study.tell(trial.number, state=TrialState.FAIL)
