"""The life of a sweep's MLflow runs, from opening to end: the only code that ends a run.

One parent run per sweep, one nested child run per trial.
- A trial opens its run, or continues it after a restart (the run id travels in the
  checkpoint), and ends it itself only when it fails or runs out of epochs (`TrialRun`).
- Tune stops most trials without asking them (ASHA, the last epoch, a budget): the driver's
  `EndTrialRuns` callback ends their runs as they stop, with the outcome and its reason.
- After Tune returns, `SweepRuns.settle` leaves nothing RUNNING and nothing undelivered,
  whatever happened on the way (Ctrl+C, the server away, a driver killed and resumed), and
  `SweepRuns.end` ends the parent once, at the very end, with its true status.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Run, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from sweeps import outbox, tracking
from sweeps.outbox import Outbox, transient
from sweeps.tracking import (
    ERROR,
    NOTE,
    OUTCOME,
    PARENT,
    ROLE,
    STOP_REASON,
    SWEEP_NAME,
    TRIAL_ID,
)

# The tags that say how a trial's run ended: a retried trial's run is cleared of them when it
# continues, so that it ends as the retry does (not `failed` with a stale error).
ENDING_TAGS = frozenset({OUTCOME, ERROR, NOTE, STOP_REASON})
RETRIED_AFTER = "vae_sweep.retried_after"  # on a continued run: the error its last try ended on


class SweepInterrupted(RuntimeError):
    """Ctrl+C (or SIGUSR1) stopped the sweep; Tune saved its state for --resume."""


# The trial's side


class TrialRun:
    """A trial's child run: continued when the trial restarts (its id from the checkpoint,
    else found by the trial's id under the same parent: a trial that died before its first
    checkpoint), created otherwise. `tags` are set either way (e.g. the new worker's pid);
    `self.tags` are those a continued run had already. Opening the run waits for the server;
    later calls go through an Outbox and never stop training."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        run_id: str | None,
        name: str,
        trial_id: str,
        tags: dict[str, str],
        params: dict[str, Any],
    ) -> None:
        self.client = MlflowClient(tracking_uri)
        tags = {TRIAL_ID: trial_id, **tags}
        self.run_id, self.tags = tracking.patiently(
            f"trial {name}",
            self._open,
            *(experiment_id, parent_run_id, run_id, name, trial_id, tags, params),
        )
        self.continued = bool(self.tags)  # a run that existed: it may hold epochs already
        self.outbox = Outbox(self.client, self.run_id)

    def _open(self, experiment_id, parent_run_id, run_id, name, trial_id, tags, params):
        run_id = run_id or self._find(experiment_id, parent_run_id, trial_id)
        if run_id is not None:
            run = self.client.get_run(run_id)
            self.client.update_run(run_id, status="RUNNING")  # restarted after a failure
            for tag in ENDING_TAGS & set(run.data.tags):  # the retry decides how it ends
                self.client.delete_tag(run_id, tag)
            if ERROR in run.data.tags:  # what the last try died of, kept apart
                tags = {RETRIED_AFTER: run.data.tags[ERROR], **tags}
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            # A run the server made while the trial stopped waiting for it has no params yet;
            # those it has stay (MLflow refuses to change a param).
            missing = {k: v for k, v in params.items() if k not in run.data.params}
            tracking.log_params(self.client, run_id, missing)
            return run_id, run.data.tags
        run = self.client.create_run(
            experiment_id,
            run_name=name,
            tags={
                ROLE: "trial",
                PARENT: parent_run_id,
                "mlflow.runName": name,
                tracking.LOGGED_IMAGES: "True",  # its grids by epoch: the UI's image charts
                **tags,
            },
        )
        tracking.log_params(self.client, run.info.run_id, params)
        return run.info.run_id, {}

    def _find(self, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
        runs = self.client.search_runs(
            [experiment_id],
            f"tags.`{PARENT}` = '{parent_run_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def restore_outbox(self, folder: Path) -> None:
        """Take over what the checkpoint in `folder` had not yet delivered."""
        self.outbox.close()
        self.outbox = Outbox.load(folder, self.client, self.run_id)

    def steps_logged(self, key: str) -> set[int]:
        """The steps of metric `key` this run holds, on the server or waiting in the outbox:
        a trial restarted from an earlier checkpoint than its run reached trains those epochs
        again, and MLflow would keep a second point for each."""
        if not self.continued:
            return set()
        history = tracking.patiently(
            f"run {self.run_id}", self.client.get_metric_history, self.run_id, key
        )
        waiting = {
            m[3] for item in self.outbox.pending for m in item.get("metrics", []) if m[0] == key
        }
        return {m.step for m in history} | waiting

    def image_steps_logged(self) -> set[int]:
        """The epochs whose grids this run holds under images/ (the `+step+N+` of each file),
        on the server or waiting in the outbox: a restarted trial draws them again otherwise,
        and the UI's image charts would show each of those epochs twice."""
        if not self.continued:
            return set()
        listed = tracking.patiently(
            f"run {self.run_id}", self.client.list_artifacts, self.run_id, tracking.IMAGES
        )
        names = [Path(a.path).name for a in listed]
        for item in self.outbox.pending:
            if item.get("path") == tracking.IMAGES and "spooled" in item:
                names += [p.name for p in (self.outbox.spool / item["spooled"]).iterdir()]
        return {step for name in names if (step := tracking.image_step(name)) is not None}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        self.outbox.log_metrics(batch)

    def log_files(self, folder: Path, artifact_path: str) -> None:
        self.outbox.log_artifacts(folder, artifact_path)

    def end(self, status: str = "FINISHED", tags: dict[str, str] | None = None) -> None:
        """End the run; with the server away the driver ends it later (`SweepRuns.settle`)."""
        try:
            self.outbox.flush()
            if tags:
                self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            self.client.set_terminated(self.run_id, status)
        except Exception as err:
            if not transient(err):
                raise
        finally:
            self.outbox.close()  # what is pending travels in the checkpoints


# What an ended trial's run says


def trial_epoch(trial) -> int:
    return int((trial.last_result or {}).get("epoch", 0))


def epochs_spent(trials) -> int:
    """Epochs the sweep's trials have trained in all (restored trials included)."""
    return sum(trial_epoch(t) for t in trials)


@dataclass(frozen=True)
class Stops:
    """What can end a trial before its last epoch, and so what its run says: the status, the
    outcome and reason tags, and a one-line description. A trial the sweep stopped by design
    (ASHA, a budget, the sweep's end) ends FINISHED with outcome `pruned` or `stopped`, so
    that the runs table shows a crash (FAILED) apart from an early stop at a glance; KILLED
    is left for a sweep interrupted (or a trial lost with its driver)."""

    max_epochs: int
    scheduler: str  # asha | fifo
    epoch_budget: int | None = None
    time_budget: float | None = None  # seconds
    metric: str = "val_bpd"  # the sweep's, for the description
    mode: str = "min"

    def spent(self, trials) -> int:
        """Epochs the sweep's `trials` have trained in all where an epoch budget makes it
        matter (0 otherwise): a sum over every trial at each trial's end, which grows with the
        sweep."""
        return epochs_spent(trials) if self.epoch_budget is not None else 0

    def outcome(self, trial, spent: int, seconds: float) -> tuple[str, dict[str, str]]:
        """The MLflow status and tags of an ended Tune trial, `spent` epochs and `seconds`
        into the sweep."""
        epoch = trial_epoch(trial)
        if trial.status == "ERROR":
            return "FAILED", failed(error_text(trial), epoch)
        if epoch >= self.max_epochs:
            note = f"Completed: trained all {self.max_epochs} epochs; {self._best(trial)}."
            return "FINISHED", {OUTCOME: "completed", NOTE: note}
        reason = self.reason(epoch, spent, seconds)
        pruned = reason.startswith("stopped early by ASHA")
        note = (
            f"{'Pruned (not a crash)' if pruned else 'Stopped'}: {reason} of "
            f"{self.max_epochs}; {self._best(trial)}."
        )
        tags = {OUTCOME: "pruned" if pruned else "stopped", STOP_REASON: reason, NOTE: note}
        return "FINISHED", tags

    def _best(self, trial) -> str:
        values = (getattr(trial, "metric_analysis", None) or {}).get(self.metric, {})
        if self.mode not in values:
            return f"no {self.metric} reported"
        return f"its best {self.metric} {values[self.mode]:.4f}"

    def reason(self, epoch: int, spent: int, seconds: float) -> str:
        when = f"after epoch {epoch}" if epoch else "before its first epoch ended"
        if self.epoch_budget is not None and spent >= self.epoch_budget:
            return f"stopped {when}: the sweep's epoch budget ({self.epoch_budget}) was spent"
        if self.time_budget is not None and seconds >= self.time_budget:
            return f"stopped {when}: the sweep's time budget ({self.time_budget:g} s) ran out"
        if epoch and self.scheduler == "asha":
            return f"stopped early by ASHA after epoch {epoch}"
        return f"stopped {when}: the sweep ended"


def failed(error: str, epoch: int | None = None) -> dict[str, str]:
    """The tags of a failed trial's run: its error and a description that says so."""
    when = f" after epoch {epoch}" if epoch else ""
    return {OUTCOME: "failed", ERROR: error[:5000], NOTE: f"Failed{when}: {error}"[:5000]}


def error_text(trial) -> str:
    """A trial's last failure in a line, from Tune's error file: the exception's own line (a
    traceback ends with it); for Ray's OOM killer its first two (the node's memory, the
    threshold: the rest is advice)."""
    path = getattr(trial, "error_file", None)
    text = Path(path).read_text() if path and Path(path).exists() else "unknown error"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("Failure # ")]
    last = lines[starts[-1] + 1 :] if starts else lines  # Tune appends one block per failure
    if last and "running low on memory" in last[0]:
        return " ".join(last[:2])[:5000]
    return (last[-1] if last else text)[:5000]


def end_if_running(
    client: MlflowClient,
    run_id: str,
    status: str,
    tags: dict[str, str],
    run: Run | None = None,
    final: bool = False,
) -> bool:
    """End `run_id` with `status` unless it already ended; True if this call ended it. A run
    that ended itself (a trial that ran out of epochs) gets `tags` if it has no outcome yet.
    `final`: Tune's own end of the trial (ERROR), which overrules another outcome the run
    holds: that of a try Tune never saved (completed, its driver killed before Tune's save;
    the retry from the checkpoint before then failed for good). `run`: the run as the caller
    just fetched it (one call less)."""
    run = run or client.get_run(run_id)
    if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
        if final and run.data.tags.get(OUTCOME) != tags.get(OUTCOME):
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            client.set_terminated(run_id, status)
            return True
        if OUTCOME in tags and OUTCOME not in run.data.tags:  # it ended itself, unsaid how
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return False
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(run_id, status)
    return True


def end_trial_run(client: MlflowClient, trial, status: str, tags: dict[str, str], runs=None):
    """Deliver an ended trial's outbox, then end its run; its log counters (None: no run).
    `runs`: the sweep's trial runs by id, as just fetched."""
    result = trial.last_result or {}
    if not (run_id := result.get("mlflow_run_id")):
        return None
    counters = outbox.deliver(client, run_id, trial.checkpoint, result)
    final = trial.status == "ERROR"  # Tune's and Optuna's word: the run must agree
    end_if_running(client, run_id, status, tags, (runs or {}).get(run_id), final)
    return counters


# trial id -> (status, tags) of each trial Tune ended, decided then: a run ended later (the
# server was away) must say why the trial stopped when it stopped, not what the sweep's final
# spent epochs or seconds would say. Kept by the driver's EndTrialRuns, read by settle.
DECIDED: dict[str, tuple[str, dict[str, str]]] = {}


class EndTrialRuns(tune.Callback):
    """Ends the runs of trials that Tune stops (ASHA, the last epoch, a budget) or that fail,
    as they end, after delivering what they could not log. With the tracking server away
    nothing waits: `SweepRuns.settle` does it at the end."""

    def __init__(self, tracking_uri: str, stops: Stops) -> None:
        self.tracking_uri, self.stops = tracking_uri, stops
        self.started = time.monotonic()

    def setup(self, **info) -> None:
        self.started = time.monotonic()  # also when a resumed sweep starts again

    def _end(self, trial, status: str, tags: dict[str, str]) -> None:
        try:
            with tracking.failing_fast():
                end_trial_run(MlflowClient(self.tracking_uri), trial, status, tags)
        except Exception as err:
            if not transient(err):
                raise
            print(f"vae-sweep: tracking server unreachable; {trial} is settled at the end")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        seconds = time.monotonic() - self.started
        decided = self.stops.outcome(trial, self.stops.spent(trials), seconds)
        DECIDED[trial.trial_id] = decided
        self._end(trial, *decided)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._end(trial, "FAILED", failed(error_text(trial), trial_epoch(trial)))

    # Tune saves a callback's state with the sweep's and restores it on --resume: the reasons
    # decided before a driver died still hold when its successor settles the runs.
    def get_state(self) -> dict | None:
        return {"decided": dict(DECIDED)} if DECIDED else None

    def set_state(self, state: dict) -> None:
        DECIDED.update(state.get("decided", {}))


# The driver's side


class SweepRuns:
    """The sweep's parent run and, through it, its trials' runs."""

    def __init__(self, tracking_uri: str, experiment: str, name: str) -> None:
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri, self.experiment, self.name = tracking_uri, experiment, name
        self.experiment_id: str | None = None
        self.parent: str | None = None

    def look_up(self, resume: bool) -> dict[str, Any] | None:
        """First of all, writing nothing: a new sweep's name is free, or --resume finds its
        sweep. Returns what a resumed sweep was started with (its kept flags)."""
        found = self.client.get_experiment_by_name(self.experiment)
        run = self._find_parent(found.experiment_id) if found else None
        if not resume:
            if run is not None:
                raise ValueError(
                    f"--name {self.name}: a sweep of that name exists already; pass "
                    "--resume to continue it, or choose another name"
                )
            return None
        if found is None:
            raise ValueError(
                f"--resume: no experiment '{self.experiment}' in {self.tracking_uri}; check "
                "--experiment and --tracking-uri"
            )
        if run is None:
            raise ValueError(
                f"--resume: no MLflow run of a sweep named '{self.name}' in this "
                "experiment; check --name, --experiment and --tracking-uri"
            )
        self.experiment_id, self.parent = found.experiment_id, run.info.run_id
        return json.loads(run.data.tags.get(tracking.KEPT, "{}"))

    def _find_parent(self, experiment_id: str):
        runs = self.client.search_runs(
            [experiment_id],
            f"tags.`{ROLE}` = 'sweep' and tags.`{SWEEP_NAME}` = '{self.name}'",
            max_results=1,
        )
        return runs[0] if runs else None

    def open(self, params: dict[str, Any], tags: dict[str, str], kept: dict[str, Any]) -> str:
        """The parent run: created (and the experiment, if new), or running again on --resume."""
        if self.parent is not None:
            self.client.update_run(self.parent, status="RUNNING")
            return self.parent
        self.experiment_id = tracking.create_experiment(
            self.client,
            self.experiment,
            self.tracking_uri,
            tracking.experiment_tags(tags.get("dataset", "its dataset")),
        )
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.name,
            tags={ROLE: "sweep", SWEEP_NAME: self.name, tracking.KEPT: json.dumps(kept), **tags},
        )
        self.parent = run.info.run_id
        tracking.log_params(self.client, self.parent, params)
        return self.parent

    def failures(self) -> list[str]:
        """`<trial run>: <why>` for each of the sweep's trials that failed."""
        runs = tracking.search_all(
            self.client,
            [self.experiment_id],
            f"tags.`{PARENT}` = '{self.parent}' and tags.`{OUTCOME}` = 'failed'",
        )
        return sorted(
            f"{r.info.run_name}: {r.data.tags.get(ERROR, 'unknown error')}" for r in runs
        )

    def outcomes(self) -> dict[str, int]:
        """How many of the sweep's trial runs ended how (completed, pruned, failed, ...)."""
        runs = tracking.search_all(
            self.client, [self.experiment_id], f"tags.`{PARENT}` = '{self.parent}'"
        )
        return dict(Counter(r.data.tags.get(OUTCOME, "unknown") for r in runs).most_common())

    def settle(self, trials: list, stops: Stops, seconds: float, expected: int | None) -> dict:
        """After Tune returned with `trials` (its saved state) `seconds` into the sweep: if the
        sweep is unfinished (Ctrl+C: trials not ended, or fewer than the `expected` number;
        None when a budget may end it early), end the unfinished trials' runs and the parent
        KILLED and raise SweepInterrupted, saying how to resume. Else leave nothing RUNNING and
        nothing undelivered: each trial's outbox is delivered and its run ended (waiting for
        the server if it is away); a run whose trial is not in the saved state (it started
        after the driver last saved, and was proposed again on --resume) ends KILLED; an empty
        second run of a trial (the server made a run the trial had stopped waiting for, and
        the trial made another) is deleted. Returns the sweep's late / dropped / pending log
        calls."""
        unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
        missing = 0 if expected is None else max(expected - len(trials), 0)
        spent = epochs_spent(trials)
        if unfinished or missing:
            ended = {
                t.trial_id: self._outcome(t, stops, spent, seconds)
                for t in trials
                if t not in unfinished
            }
            self._interrupted(ended, len(unfinished) + missing, expected)
        runs = tracking.patiently("ending the sweep's trials", self._trial_runs)
        totals = dict.fromkeys(outbox.NOTHING, 0)
        for trial in trials:
            status, tags = self._outcome(trial, stops, spent, seconds)
            counters = tracking.patiently(
                f"settling {trial}", end_trial_run, self.client, trial, status, tags, runs
            )
            for key, value in (counters or {}).items():
                totals[key] += value
        by_id = {t.trial_id: t for t in trials}
        reported = {(t.last_result or {}).get("mlflow_run_id") for t in trials}
        copies = Counter(r.data.tags.get(TRIAL_ID) for r in runs.values())
        for run in runs.values():  # runs no trial reported: ended above if they are
            if run.info.run_id in reported or run.info.status != "RUNNING":
                continue
            trial = by_id.get(trial_id := run.data.tags.get(TRIAL_ID))
            if copies[trial_id] > 1 and not run.data.metrics and not run.data.params:
                # a create_run the client gave up waiting for, made by the server anyway
                self.client.delete_run(run.info.run_id)
                copies[trial_id] -= 1
                continue
            if trial is None:
                lost = "lost with the driver; proposed again"
                status, tags = "KILLED", {OUTCOME: "lost", STOP_REASON: lost, NOTE: f"{lost}."}
            else:  # it never reported
                status, tags = self._outcome(trial, stops, spent, seconds)
            end_if_running(self.client, run.info.run_id, status, tags, run)
        self.client.set_tag(self.parent, "vae_sweep.log_calls", json.dumps(totals))
        return totals

    @staticmethod
    def _outcome(trial, stops: Stops, spent: int, seconds: float) -> tuple[str, dict]:
        """How `trial` ended: as decided when Tune ended it, else (a trial whose end the
        driver did not see) from the sweep's totals now."""
        if trial.status == "TERMINATED" and trial.trial_id in DECIDED:
            return DECIDED[trial.trial_id]
        return stops.outcome(trial, spent, seconds)

    def _trial_runs(self) -> dict[str, Run]:
        """The sweep's trial runs by id: one search, not a call per trial."""
        query = f"tags.`{PARENT}` = '{self.parent}'"
        runs = tracking.search_all(self.client, [self.experiment_id], query)
        return {r.info.run_id: r for r in runs}

    def _interrupted(self, ended: dict[str, tuple], count: int, expected: int | None) -> None:
        """End every run of the sweep still RUNNING: as its trial ended (`ended`: trial id ->
        status and tags), else KILLED, interrupted (also a trial's run opened before its first
        report, which Tune's state knows nothing of); then the parent; then raise."""
        resume = f"{Path(sys.argv[0]).name} --resume --name {self.name} (same --storage-path)"
        note = {
            OUTCOME: "interrupted",
            STOP_REASON: f"interrupted; continue with {resume}",
            NOTE: f"Interrupted with the sweep; continue it with {resume}.",
        }
        for run in self._trial_runs().values():
            status, tags = ended.get(run.data.tags.get(TRIAL_ID, ""), ("KILLED", note))
            end_if_running(self.client, run.info.run_id, status, tags, run)
        sweep_note = f"Sweep {self.name} interrupted, its state saved; continue with {resume}."
        end_if_running(
            self.client, self.parent, "KILLED", {STOP_REASON: note[STOP_REASON], NOTE: sweep_note}
        )
        raise SweepInterrupted(
            f"sweep {self.name} interrupted with {count}"
            f"{f' of {expected}' if expected else ''} trials unfinished; its state is saved: "
            f"continue with {resume}"
        )

    def end(
        self,
        status: str,
        error: BaseException | None = None,
        note: str = "",
        tags: dict[str, str] | None = None,
    ) -> None:
        """End the parent run, once, with the sweep's true status, its description and
        `tags`."""
        if self.parent is None:
            return
        tags = dict(tags or {})
        if error:
            tags[ERROR] = f"{type(error).__name__}: {error}"[:5000]
            note = f"Sweep {self.name} failed: {tags[ERROR]}"[:5000]
        if note:
            tags[NOTE] = note
        end_if_running(self.client, self.parent, status, tags)
