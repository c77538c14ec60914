"""What a running sweep prints: one line per trial epoch, one when a trial ends, and every
minute where the sweep stands, instead of Tune's result boxes, its TensorBoard hint and the
trials' checkpoint chatter.

    02 z16 beta0.4 sigma0.12 learned   epoch  4/40  val_bpd 5.3121  val_kl 31.2  11.0 s
    02 z16 beta0.4 sigma0.12 learned   Pruned (not a crash): stopped early by ASHA after ...
    vae-sweep: 4 of 6 trials ended, 2 running; best val_bpd 5.0611 (05 z32 ...)  12:41 in
"""

from __future__ import annotations

import logging
import math
import time

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from sweeps.lifecycle import Stops, error_text
from sweeps.tracking import NOTE

# Tune adds these loggers itself, and TensorBoard's too (or a warning that it is missing),
# unless told not to: sweeps.tuner sets TUNE_DISABLE_AUTO_CALLBACK_LOGGERS and passes the two
# that Tune's own analysis reads (result.json, progress.csv).
LOGGERS = (CSVLoggerCallback, JsonLoggerCallback)
CHECKPOINT_LOGGER = "ray.train._internal.storage"  # "Checkpoint successfully created at ..."


ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"


class _NeverStarted(logging.Filter):
    """Tune's "Failed to fetch metrics for N trial(s)", a line each: the trials a budget
    stopped the sweep before they started have no results to fetch (the summary counts what
    did run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to fetch metrics for")


def quiet_unstarted_trials() -> None:
    """On the driver: no warning per trial that never started."""
    logger = logging.getLogger(ANALYSIS_LOGGER)
    if not any(isinstance(f, _NeverStarted) for f in logger.filters):
        logger.addFilter(_NeverStarted())


def quiet_trial_logs() -> None:
    """In a trial's worker: no line per checkpoint forwarded to the driver's console."""
    logging.getLogger(CHECKPOINT_LOGGER).setLevel(logging.WARNING)


class EpochLines(tune.Callback):
    """Tune callback printing the compact lines above."""

    def __init__(self, stops: Stops, every: float = 60.0) -> None:
        self.stops, self.every = stops, every
        self.metric, self.mode, self.max_epochs = stops.metric, stops.mode, stops.max_epochs
        self.started = self.last_status = time.monotonic()
        self.width = 0

    def setup(self, **info) -> None:
        self.started = self.last_status = time.monotonic()

    def _name(self, trial) -> str:
        self.width = max(self.width, len(str(trial)))
        return f"{str(trial):<{self.width}}"

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info):
        epoch = int(result.get("epoch", 0))
        parts = [f"epoch {epoch:>{len(str(self.max_epochs))}}/{self.max_epochs}"]
        for key in dict.fromkeys((self.metric, "val_bpd", "val_kl")):
            if isinstance(value := result.get(key), int | float) and math.isfinite(value):
                parts.append(f"{key} {value:.4f}" if key != "val_kl" else f"{key} {value:.1f}")
        if seconds := result.get("epoch_seconds"):
            parts.append(f"{seconds:.1f} s")
        print(f"{self._name(trial)}   {'  '.join(parts)}", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info):
        # what its run's description says (lifecycle.Stops: pruned, a budget, completed)
        seconds = time.monotonic() - self.started
        _, tags = self.stops.outcome(trial, self.stops.spent(trials), seconds)
        print(f"{self._name(trial)}   {tags[NOTE]}", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial, **info):
        epoch = int((trial.last_result or {}).get("epoch", 0))
        print(
            f"{self._name(trial)}   FAILED after epoch {epoch}: {error_text(trial)[:300]}; "
            f"error file {trial.error_file}",
            flush=True,
        )

    def on_step_end(self, iteration: int, trials: list, **info):
        now = time.monotonic()
        if now - self.last_status < self.every:
            return
        self.last_status = now
        where = status(trials, self.metric, self.mode)
        print(f"vae-sweep: {where}  {_clock(now - self.started)} in", flush=True)


def status(trials: list, metric: str, mode: str) -> str:
    """`4 of 6 trials ended, 2 running; best val_bpd 5.0611 (05 z32 ...)`."""
    ended = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
    running = sum(t.status == "RUNNING" for t in trials)
    scored = [
        (t.metric_analysis[metric][mode], str(t))
        for t in trials
        if metric in (getattr(t, "metric_analysis", None) or {})
    ]
    line = f"{ended} of {len(trials)} trials ended, {running} running"
    if scored:
        value, name = (max if mode == "max" else min)(scored)
        line += f"; best {metric} {value:.4f} ({name})"
    return line


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"
