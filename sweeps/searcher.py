"""Optuna's TPE behind Ray Tune, told the truth about trials that ASHA stops.

Ray's OptunaSearch records a trial that the scheduler stopped early as COMPLETE with its early,
worse value, so TPE learns from truncated results as if they were final. Here a trial that
ended before the sweep's epoch budget is told to Optuna as PRUNED: Optuna keeps its last
reported value (TPE ranks pruned trials by it, below complete ones), and a trial that failed is
FAIL, as before. The result that made ASHA stop a trial reaches the searcher only through
on_trial_complete, not on_trial_result: it is reported here, so the pruned trial's value is its
last epoch's, not the one before.

How a trial ended is told to the study only once Tune's saved state says it ended. The study
is written at once, Tune's state every 10 s or more: a driver killed in between would leave a
trial ended in the study that a resumed sweep runs again, so that the study and the run would
disagree on it. Each save of the searcher tells what the previous save held back (Tune has
saved its state since); a restore tells what the saved searcher held back; the engine tells
the rest after Tune's last save (`tell_held_back`). TPE learns of a result one save later.
(Tune uploads its state to the storage in the background and skips an upload while the last
one runs: an upload slower than Tune's period between saves leaves a window open again.)

The study is an SQLite file on the driver. When the sweep's state is on remote storage (s3://)
the driver's disk may not outlive it (a new head, a KubeRay emptyDir): each time Tune saves the
searcher, a consistent copy of the study goes beside it, into the folder Tune uploads, and a
restore on a driver without the study fetches that copy back from the storage.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import warnings
from collections.abc import Sequence
from contextlib import closing, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
import pyarrow.fs as pafs
from optuna.trial import FrozenTrial, TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

STUDY_COPY = "optuna-study.db"  # beside the searcher's state in the sweep's folder
TRIAL_INDEX = "trial_index"  # the Optuna trial's number, in each suggested config
TUNE_TRIAL_ID = "ray.trial_id"  # on each Optuna trial: the Tune trial it was asked for


class PruningAwareOptunaSearch(OptunaSearch):
    def __init__(
        self,
        *args,
        max_iterations: int,
        study_copy: str | None = None,
        warm_start: Sequence[FrozenTrial] = (),
        **kwargs,
    ):
        self._max_iterations = max_iterations  # epochs a trial runs unless stopped
        self._study_copy = study_copy  # URI of the study's copy beside the sweep's state
        self._warm_start = list(warm_start)  # an earlier sweep's trials, told before any ask
        self._warm = 0  # how many of them the study holds: its trial numbers start there
        self._held: list[Tell] = []  # ended trials not yet told to the study, oldest first
        self._saved = 0  # how many of them the last save held back (Tune saved them since)
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode) -> None:
        """The study, and in a new one the earlier sweep's trials (--warm-start), as they
        ended: TPE's start-up trials and its model count them."""
        super()._setup_study(mode)
        if self._warm_start and not self._ot_study.get_trials(deepcopy=False):
            for trial in self._warm_start:
                self._ot_study.add_trial(
                    optuna.trial.create_trial(
                        state=trial.state,
                        values=trial.values,
                        params=trial.params,
                        distributions={k: self._space[k] for k in trial.params},
                        intermediate_values=trial.intermediate_values,
                    )
                )
            self._warm = len(self._warm_start)
        self._warm_start = []  # told: not pickled with the searcher's state

    def _study_file(self) -> Path | None:
        url = getattr(self._storage, "url", "") or ""
        return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None

    def save(self, checkpoint_path: str) -> None:
        """Tell what the previous save held back (Tune's state saved since says those trials
        ended); hold the rest back, in the saved state and beside the study (_held_file)."""
        _tell(self._ot_study, self._held[: self._saved])
        self._held, self._saved = self._held[self._saved :], len(self._held) - self._saved
        super().save(checkpoint_path)
        if (study := self._study_file()) is not None:
            _write_held(study, self._held)
            if self._study_copy:
                _copy_sqlite(study, Path(checkpoint_path).with_name(STUDY_COPY))

    def restore(self, checkpoint_path: str) -> None:
        """Tune's saved searcher; and on a driver whose study has fewer trials than the copy
        saved with it (a new head: restoring made it an empty one), the copy. The copy was
        taken with the pickled state, so the two agree. Then what that save held back is told:
        Tune's state, saved with it, says those trials ended."""
        super().restore(checkpoint_path)
        self._fetch_study_copy()
        _tell(self._ot_study, self._held)
        self._held, self._saved = [], 0

    def _fetch_study_copy(self) -> None:
        if not self._study_copy or (study := self._study_file()) is None:
            return
        with tempfile.TemporaryDirectory() as folder:
            saved = Path(folder) / STUDY_COPY
            if not fetch_study_copy(self._study_copy, saved):
                return
            if _trials_in(study) < _trials_in(saved):  # in place: the study has it open
                _backup(saved, study)

    def suggest(self, trial_id: str) -> dict | None:
        """The proposed params, and the Optuna trial's number (from 0, kept in the study; after
        an earlier sweep's trials, from 0 again): the trial seeds its training with it."""
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            trial = self._ot_trials[trial_id]
            trial.set_user_attr(TUNE_TRIAL_ID, trial_id)  # for end_unfinished
            config[TRIAL_INDEX] = trial.number - self._warm
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Held back until Tune has saved that the trial ended (see the module's doc)."""
        if trial_id in self._completed_trials:
            return  # a trial run again after a restore, told already
        self._completed_trials.add(trial_id)
        trial, result = self._ot_trials[trial_id], result or {}
        several = isinstance(self._metric, list)
        values = [result.get(m) for m in self._metric] if several else result.get(self._metric)
        if error:  # (Ray's OptunaSearch tells COMPLETE when the trial had reported a value)
            self._held.append(Tell(trial.number, TrialState.FAIL.name))
        elif values is None or (several and None in values):
            self._held.append(Tell(trial.number, TrialState.PRUNED.name))  # no result
        elif result.get(TRAINING_ITERATION, 0) < self._max_iterations:  # stopped early
            if not several:  # its curve's last point, the one that stopped it (Optuna keeps
                with suppress(optuna.exceptions.UpdateFinishedTrialError):  # no curve of
                    trial.report(values, result[TRAINING_ITERATION])  # several); see _tell
            self._held.append(Tell(trial.number, TrialState.PRUNED.name))
        else:  # Optuna makes a NaN value a FAIL
            self._held.append(Tell(trial.number, None, values))


@dataclass(frozen=True)
class Tell:
    """How an Optuna trial ended: its state (None: COMPLETE, or FAIL for a NaN value) and its
    value(s); a pruned trial's value is its last reported one."""

    number: int
    state: str | None
    values: float | list[float] | None = None


def _tell(study: optuna.Study, tells: list[Tell]) -> None:
    """Tell the study how these trials ended; one it holds as ended already (told by a driver
    that died before Tune saved that) stays as it is."""
    for tell in tells:
        state = None if tell.state is None else TrialState[tell.state]
        study.tell(tell.number, tell.values, state=state, skip_if_finished=True)


def _held_file(study: Path) -> Path:
    """Beside the study, the tells the searcher's last save held back. Not a .json: Tune
    copies the sweep folder's .json and .pkl files to the driver when it restores a sweep
    and back at each save, which would put a stale copy over it."""
    return study.with_name(f"{study.name}.held")


def _write_held(study: Path, held: list[Tell]) -> None:
    """For `tell_held_back` after Tune's last save; written then renamed."""
    target = _held_file(study)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(json.dumps([asdict(t) for t in held]))
    partial.replace(target)


def tell_held_back(study_name: str, storage_url: str) -> None:
    """After Tune's last save: tell the study what the searcher's last save held back."""
    held = _held_file(Path(storage_url.removeprefix("sqlite:///")))
    if held.exists():
        study = optuna.load_study(study_name=study_name, storage=storage_url)
        _tell(study, [Tell(**t) for t in json.loads(held.read_text())])
        held.unlink()


def fetch_study_copy(uri: str, target: Path) -> bool:
    """The study's copy at `uri` (beside a sweep's state on its storage) into `target`; False
    when there is none."""
    fs, path = pafs.FileSystem.from_uri(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return False
    pafs.copy_files(path, str(target), source_filesystem=fs)
    return True


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


@dataclass(frozen=True)
class TPE:
    """How TPE proposes. `startup`: trials sampled at random before TPE models the results;
    `multivariate`: one joint density over the parameters instead of one per parameter;
    `constant_liar`: trials still running count as bad results, so that trials proposed at the
    same time spread out instead of all taking the current best guess."""

    startup: int = 10  # Optuna's default
    multivariate: bool = False
    constant_liar: bool = False

    def sampler(self, seed: int) -> optuna.samplers.TPESampler:
        with warnings.catch_warnings():  # multivariate, group and constant_liar: "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed,
                multivariate=self.multivariate,
                group=self.multivariate,  # conditional spaces: a density per set of params
                constant_liar=self.constant_liar,
                n_startup_trials=self.startup,
            )


# The engine's TPE: Optuna's defaults. On 512 recorded learning curves no other setting
# (start-up, multivariate, constant liar, all three) did better on both datasets, and random
# sampling with ASHA did better than all of them (docs/BENCHMARKS.md, "Search replay").
DEFAULT_TPE = TPE()


def make_searcher(
    study_name: str,
    storage_url: str | None,
    seed: int,
    max_epochs: int,
    metrics: list[str] | None = None,
    modes: list[str] | None = None,
    study_copy: str | None = None,
    tpe: TPE | None = None,
    warm_start: Sequence[FrozenTrial] = (),
) -> PruningAwareOptunaSearch:
    """TPE (`tpe`, default DEFAULT_TPE), seeded, on a persistent study named after the
    sweep (two sweeps never merge; None: in memory), optimising `metrics` in `modes` (default:
    minimise val_bpd; two make it Optuna's multi-objective TPE); with `study_copy` (its URI
    beside the sweep's state on remote storage), the study travels with the state;
    `warm_start`: an earlier sweep's trials (earlier_trials), told to the new study first."""
    metrics = metrics or ["val_bpd"]
    modes = modes or ["min"] * len(metrics)
    several = len(metrics) > 1
    return PruningAwareOptunaSearch(
        metric=metrics if several else metrics[0],
        mode=modes if several else modes[0],
        study_name=study_name,
        storage=optuna.storages.RDBStorage(storage_url) if storage_url else None,
        sampler=(tpe or DEFAULT_TPE).sampler(seed),
        max_iterations=max_epochs,
        study_copy=study_copy,
        warm_start=warm_start,
    )


def earlier_trials(
    study_name: str, storage_url: str, space: dict, modes: list[str]
) -> tuple[list[FrozenTrial], int]:
    """The finished and early-stopped trials of an earlier sweep's study that lie in `space`
    (a Tune space: a widened space holds them all), for --warm-start; and how many others it
    had. Raises ValueError naming --warm-start when the study optimised something else or has
    nothing to tell."""
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    directions = ["minimize" if m == "min" else "maximize" for m in modes]
    if [d.name.lower() for d in study.directions] != directions:
        raise ValueError(
            f"--warm-start {study_name}: that sweep's study was to "
            f"{' and '.join(d.name.lower() for d in study.directions)}, this one is to "
            f"{' and '.join(directions)} (another --objective); warm-start from a sweep of "
            "the same objective"
        )
    distributions = OptunaSearch.convert_search_space(space)
    told = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    kept = in_space(told, distributions, study_name)
    return kept, len(study.trials) - len(kept)


def ended_trial(
    state: TrialState, curves: list[dict[int, float]], params: dict, distributions: dict
) -> FrozenTrial:
    """A trial that ended COMPLETE or PRUNED, as PruningAwareOptunaSearch leaves it in the
    study: `curves` holds each objective's value by epoch; its values are their last (a
    pruned trial of one objective keeps its last value, of several none), and one objective
    keeps its curve as intermediate values (TPE ranks a pruned trial by it)."""
    one = len(curves) == 1
    return optuna.trial.create_trial(
        state=state,
        values=[c[max(c)] for c in curves] if state == TrialState.COMPLETE or one else None,
        params=params,
        distributions=distributions,
        intermediate_values=curves[0] if one else {},
    )


def in_space(told: list[FrozenTrial], distributions: dict, sweep: str) -> list[FrozenTrial]:
    """The trials of `told` whose params `distributions` hold (an Optuna space); raises
    ValueError naming --warm-start when there is none."""
    kept = [
        trial
        for trial in told
        if set(trial.params) == set(distributions)
        and all(_holds(distributions[k], v) for k, v in trial.params.items())
    ]
    if not kept:
        raise ValueError(
            f"--warm-start {sweep}: none of its {len(told)} finished or stopped trials "
            f"lies in this sweep's space ({', '.join(sorted(distributions))}); warm-start from "
            "a sweep of the same parameters, whose values this space's ranges and choices hold"
        )
    return kept


def _holds(distribution: optuna.distributions.BaseDistribution, value) -> bool:
    """Whether `value` lies in `distribution` (Optuna's own check, with its rounding)."""
    try:
        return distribution._contains(distribution.to_internal_repr(value))
    except ValueError:  # a choice the distribution does not have
        return False


def end_unfinished(study_name: str, storage_url: str, stopped: set[str]) -> None:
    """Trials the study still holds RUNNING after the sweep: PRUNED for those Tune stopped
    without telling the searcher (`stopped`: Tune's ids; a budget that ends the sweep stops
    the running trials so), their last reported value standing; FAIL for the rest (proposed
    by a driver that died before Tune saved them)."""
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    for trial in study.get_trials(deepcopy=False, states=[TrialState.RUNNING]):
        pruned = trial.user_attrs.get(TUNE_TRIAL_ID) in stopped
        study.tell(trial.number, state=TrialState.PRUNED if pruned else TrialState.FAIL)
