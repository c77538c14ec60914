"""What the tracking store holds, read from the command line: `vae-sweep list` (the sweeps,
newest first), `vae-sweep show NAME` (a sweep's best trials and its Pareto front), and
`vae-sweep promote NAME VERSION --reason ...` (the champion moved by hand, the reason kept)
and `vae-sweep delete NAME VERSION` (a deleted champion's place goes to the best one left).

Reading never writes: a store that does not exist is named, not created.
"""

from __future__ import annotations

import getpass
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.table import Table

from sweeps.registry import CHAMPION, PROMOTED, delete_version, make_champion, resolve
from sweeps.tracking import NOTE, OUTCOME, OUTCOMES, PARENT, ROLE, SWEEP_NAME, search_all


class NotFoundError(ValueError):
    """A sweep or store that is not there; the message says what is."""


def check_store(uri: str) -> None:
    """A local SQLite store must exist: reading one that does not would create it, empty."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            raise NotFoundError(
                f"no MLflow store at {path} (searched {uri}): run a sweep here first, or pass "
                "--tracking-uri (or set MLFLOW_TRACKING_URI) to the store a sweep wrote"
            )


def _experiments(client: MlflowClient, name: str | None) -> dict[str, str]:
    """id -> name of the experiment `name`, or of every experiment."""
    if name is not None:
        found = client.get_experiment_by_name(name)
        if found is None:
            names = sorted(e.name for e in client.search_experiments())
            raise NotFoundError(f"--experiment {name}: none such; experiments: {names}")
        return {found.experiment_id: found.name}
    return {e.experiment_id: e.name for e in client.search_experiments()}


@dataclass
class Sweep:
    experiment: str
    run: Any  # the parent run

    @property
    def name(self) -> str:
        return self.run.data.tags[SWEEP_NAME]

    def best(self) -> tuple[str, float] | None:
        metrics = self.run.data.metrics
        found = [(k.removeprefix("best_"), v) for k, v in metrics.items() if k.startswith("best_")]
        preferred = [f for f in found if f[0] != "val_bpd"] or found  # the objective first
        return preferred[0] if preferred else None


def sweeps(client: MlflowClient, experiment: str | None = None) -> list[Sweep]:
    """Every sweep's parent run, newest first."""
    names = _experiments(client, experiment)
    if not names:
        return []
    runs = search_all(
        client, list(names), f"tags.`{ROLE}` = 'sweep'", ["attributes.start_time DESC"]
    )
    return [Sweep(names[r.info.experiment_id], r) for r in runs]


def find_sweep(client: MlflowClient, name: str, experiment: str | None = None) -> Sweep:
    found = [s for s in sweeps(client, experiment) if s.name == name]
    if not found:
        known = [s.name for s in sweeps(client, experiment)][:20]
        raise NotFoundError(
            f"no sweep named {name!r}; sweeps: {', '.join(known) if known else 'none yet'}"
        )
    if len(found) > 1:
        where = ", ".join(s.experiment for s in found)
        raise NotFoundError(f"sweep {name!r} is in several experiments ({where}): --experiment")
    return found[0]


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000)) if ms else ""


def _trials(sweep: Sweep, client: MlflowClient) -> str:
    """`8: 2 completed, 6 pruned`, from the parent's tag, or counted while it runs."""
    if OUTCOMES in sweep.run.data.tags:
        counts = json.loads(sweep.run.data.tags[OUTCOMES])
    else:
        runs = search_all(client, [sweep.run.info.experiment_id], _children(sweep))
        counts = {}
        for r in runs:
            what = r.data.tags.get(OUTCOME, r.info.status.lower())
            counts[what] = counts.get(what, 0) + 1
    total = sum(counts.values())
    return f"{total}: " + ", ".join(f"{n} {k}" for k, n in counts.items()) if total else "0"


def _children(sweep: Sweep) -> str:
    return f"tags.`{PARENT}` = '{sweep.run.info.run_id}'"


class _AliasesNow:
    """The aliases a version holds in the registry now (a later sweep or a promotion may have
    moved them since the sweep registered it); one look-up per registered model."""

    def __init__(self, client: MlflowClient) -> None:
        self.client, self.models = client, {}

    def of(self, registered: str) -> list[str]:
        name, _, version = registered.rpartition("/")
        if name not in self.models:
            try:
                self.models[name] = self.client.get_registered_model(name).aliases
            except MlflowException:  # deleted since
                self.models[name] = {}
        return sorted(a for a, v in self.models[name].items() if str(v) == version)


def list_table(client: MlflowClient, experiment: str | None = None) -> Table:
    table = Table(title="sweeps, newest first", title_justify="left")
    for column in ("sweep", "experiment", "status", "started", "trials", "best", "registered"):
        table.add_column(column, overflow="fold")
    aliases = _AliasesNow(client)
    for sweep in sweeps(client, experiment):
        best = sweep.best()
        registered = sweep.run.data.tags.get("registered_model", "")
        if registered:
            registered += "".join(f" @{a}" for a in aliases.of(registered))
        table.add_row(
            sweep.name,
            sweep.experiment,
            sweep.run.info.status,
            _when(sweep.run.info.start_time),
            _trials(sweep, client),
            f"{best[0]} {best[1]:.4f}" if best else "",
            registered,
        )
    return table


SHOWN = ("val_bpd", "val_bpd_calibrated", "val_kl", "val_mse", "val_mig")


def show_tables(client: MlflowClient, name: str, experiment: str | None, top: int) -> list:
    """The sweep's description, its `top` trials by their best val_bpd (or the objective's
    metric), and its Pareto front when it has one."""
    sweep = find_sweep(client, name, experiment)
    params = sweep.run.data.params
    metric = params.get("metric", "val_bpd")
    maximise = metric == "val_mig"
    runs = search_all(client, [sweep.run.info.experiment_id], _children(sweep))

    def best(run) -> tuple[float | None, int]:
        """Its best `metric` and the epochs it reported (one history call per trial)."""
        values = [m.value for m in client.get_metric_history(run.info.run_id, metric)]
        return ((max if maximise else min)(values) if values else None), len(values)

    scored = [(*best(r), r) for r in runs]
    scored.sort(key=lambda s: (s[0] is None, -(s[0] or 0) if maximise else (s[0] or 0)))
    table = Table(
        title=f"{len(runs)} trials of {name}, by their best {metric} on validation"
        + (f" (the best {top})" if len(runs) > top else ""),
        title_justify="left",
    )
    table.add_column("trial", overflow="fold")
    table.add_column("outcome")
    table.add_column("epochs", justify="right")
    table.add_column(f"best {metric}", justify="right")
    last = [k for k in SHOWN if any(k in r.data.metrics for r in runs) and k != metric]
    for key in last:
        table.add_column(f"{key} (last)", justify="right")
    for value, epochs, run in scored[:top]:
        mark = " *" if run.data.tags.get("vae_sweep.best") == "true" else ""
        table.add_row(
            run.info.run_name + mark,
            run.data.tags.get(OUTCOME, run.info.status.lower()),
            str(epochs),
            "" if value is None else f"{value:.4f}",
            *(f"{run.data.metrics[k]:.4f}" if k in run.data.metrics else "" for k in last),
        )
    tables: list = [sweep.run.data.tags.get(NOTE, ""), table]
    if front := _front(client, sweep):
        tables.append(front)
    tables.append("* the best trial, registered")
    return tables


def _front(client: MlflowClient, sweep: Sweep) -> Table | None:
    """A rate-distortion sweep's Pareto front, from its parent's sweep/pareto_front.json."""
    names = {a.path for a in client.list_artifacts(sweep.run.info.run_id, "sweep")}
    if "sweep/pareto_front.json" not in names:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = client.download_artifacts(sweep.run.info.run_id, "sweep/pareto_front.json", folder)
        data = json.loads(Path(path).read_text())
    columns, rows = data["columns"], data["data"]
    shown = [c for c in ("version", "trial", "val_kl", "val_mse", "val_bpd") if c in columns]
    table = Table(title="Pareto front (rate val_kl, distortion val_mse)", title_justify="left")
    for column in shown:
        table.add_column(column, justify="left" if column == "trial" else "right")
    for row in rows:
        values = dict(zip(columns, row, strict=True))
        table.add_row(
            *(
                f"{values[c]:.4f}" if isinstance(values[c], float) else str(values[c])
                for c in shown
            )
        )
    return table


def promote(tracking_uri: str, name: str, version: str, reason: str) -> str:
    """Make `version` of `name` the champion by hand; the reason, who and when go on the
    version (tag vae_sweep.promoted). It stands until a version registered later beats it.
    Returns what changed."""
    if not reason.strip():
        raise ValueError("--reason: say why (it is kept on the version)")
    client = MlflowClient(tracking_uri)
    chosen = resolve(client, f"{name}/{version}")  # names what exists when it does not
    before = client.get_registered_model(name).aliases.get(CHAMPION)
    who = f"{reason.strip()} (by {getpass.getuser()}, {time.strftime('%Y-%m-%d %H:%M %Z')})"
    make_champion(tracking_uri, name, str(chosen.version), who, PROMOTED)
    was = f"was version {before}" if before is not None else "there was none"
    return f"{name} version {chosen.version} is @champion ({was}): {reason.strip()}"


def delete(tracking_uri: str, name: str, version: str) -> str:
    """Delete a version of `name`; a deleted champion's place goes to the best version left
    of the model's key. Returns what changed."""
    client = MlflowClient(tracking_uri)
    chosen = resolve(client, f"{name}/{version}")  # names what exists when it does not
    champion = delete_version(tracking_uri, name, str(chosen.version))
    now = f"version {champion}" if champion is not None else "none (no version of its key left)"
    return f"{name} version {chosen.version} deleted; @champion is now {now}"


def render(items: list, console: Console | None = None) -> None:
    """Print tables and lines: as wide as the terminal, or 200 columns into a file or pipe
    (rich's 80 would fold the trial names)."""
    if console is None:
        console = Console(soft_wrap=False)
        if not console.is_terminal:
            console = Console(soft_wrap=False, width=200)
    for item in items:
        console.print(item)
