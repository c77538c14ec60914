"""Run the fault-injection and bad-input tests, collect the figures they measure, and write
docs/RELIABILITY.md: one row per fault and per input class, what was done, what happened,
the figures, and the test that shows it.

    python benchmarks/reliability.py            # about 10 minutes on 2 cores
    VAE_SWEEP_RECORD=/tmp/r.jsonl python -m pytest -q   # or: record during the whole suite,
    python benchmarks/reliability.py --records /tmp/r.jsonl     # then write from that

The tests assert what must hold (no run duplicated or left RUNNING, no metric point lost,
exit codes, untouched stores); the figures (seconds to recover, log calls delivered late)
are what they measured on the way, recorded through tests/record.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import REPO, command, commit, machine, save_json, sections

DOC = REPO / "docs" / "RELIABILITY.md"
TESTS = [
    "tests/test_sweep_faults.py",
    "tests/test_cluster.py::test_a_lost_worker_node_s_trial_finishes_on_the_other_from_its_checkpoint",
    "tests/test_tracking_outage.py",
    "tests/test_tracking_server.py::test_two_sweeps_at_once_log_and_register_on_the_server_and_pull_fetches_over_http",
    "tests/test_bad_input.py",
    "tests/test_bad_input_mid_sweep.py",
    "tests/test_chaos.py",
    "tests/test_cluster_configs.py::test_a_malformed_launcher_config_is_refused_naming_the_field",
]
WHAT = {
    "chaos: every kind of fault once": (
        "one sweep (3 trials, TPE, ASHA) on a loopback Ray (head + 2 workers) and `mlflow "
        "server` on PostgreSQL, dealt at seeded random times a trial worker SIGKILL, a worker "
        "node replaced, a server restart and a driver SIGKILL + `--resume` "
        "(benchmarks/chaos.py; its full run: the Chaos section below)",
        "counted from Tune, Optuna and MLflow afterwards: every epoch logged once, no run left "
        "RUNNING, the three agree on every trial's end, one registration, the right champion",
    ),
    "diverging trials (lr 1e4: NaN at step 2)": (
        "4 trials, search space lr in {1e-3, 1e4}",
        "each diverged trial ends FAILED in Ray and in MLflow (reason tagged), FAIL in Optuna; "
        "Tune's retries stop at once instead of training into the same NaN; the others finish",
    ),
    "trial worker killed (SIGKILL)": (
        "the trial's worker process killed after its first checkpoint",
        "Tune restores the trial from its checkpoint in a new worker; it continues its own run",
    ),
    "worker node lost mid-sweep": (
        "`Cluster.remove_node` on the node of a running trial (head + 2 workers)",
        "the trial is retried from its last checkpoint on the other node, in the same run",
    ),
    "driver interrupted (Ctrl+C), resumed, killed (SIGKILL), resumed twice": (
        "SIGINT to the driver after 2 epochs, `--resume --name` alone, SIGKILL to that driver "
        "2 epochs later (its runs left RUNNING), `--resume`, `--resume` of the finished sweep",
        "runs end KILLED with how to resume; the resumes keep the sweep's flags, settle every "
        "run and Optuna trial, spend the epoch budget exactly; one model version, however "
        "often the sweep finishes",
    ),
    "tracking server down mid-sweep, then back": (
        "`mlflow server` stopped for ~12 s while 2 trials train, then restarted",
        "trials keep training; their log calls wait in outboxes (carried in checkpoints) and "
        "arrive when the server is back; counted in the summary and a tag",
    ),
    "two sweeps at once, one server and registered model": (
        "two sweeps started together against one `mlflow server` (PostgreSQL, basic-auth) "
        "and registry name",
        "each sweep's runs are its own trials, two studies, two versions; champion = better",
    ),
}
COLUMNS = [
    ("trials_lost", "trials lost"),
    ("duplicate_runs", "runs duplicated"),
    ("left_running", "runs left RUNNING"),
    ("points_missing", "metric points missing"),
    ("seconds_to_recover", "s to recover"),
]


def run_tests(records: Path) -> int:
    env = {**os.environ, "VAE_SWEEP_RECORD": str(records)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=REPO, env=env
    ).returncode


def fault_rows(records: list[dict]) -> list[str]:
    rows = [
        "| fault | what was done | what happened | "
        + " | ".join(title for _, title in COLUMNS)
        + " | other figures | test |",
        "|---" * (len(COLUMNS) + 5) + "|",
    ]
    for rec in records:
        if rec["case"] not in WHAT:
            continue
        done, happened = WHAT[rec["case"]]
        figures = [str(rec.get(key, "-")) for key, _ in COLUMNS]
        shown = {"case", "test", *(key for key, _ in COLUMNS)}
        other = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in rec.items() if k not in shown)
        rows.append(
            f"| {rec['case']} | {done} | {happened} | {' | '.join(figures)} | {other} "
            f"| `{rec['test'].split('::')[0]}` |"
        )
    return rows


def input_rows(records: list[dict]) -> list[str]:
    rows = [
        "| input | error (stderr) | exit | trials started | store changed | s to the error |",
        "|---|---|---|---|---|---|",
    ]
    for rec in records:
        if rec["case"] == "bad input":
            message = rec["message"].replace("|", "\\|")
            rows.append(
                f"| {rec['input']} | `{message}` | {rec['exit_code']} | {rec['trials_started']} "
                f"| {'yes' if rec['store_changed'] else 'no'} | {rec['seconds_to_error']} |"
            )
    return rows


MID_SWEEP = "bad input met mid-sweep"  # a record's case: contained, not refused


def mid_sweep_rows(records: list[dict]) -> list[str]:
    """Bad input met once trials run: what the sweep said and did, and its figures."""
    rows = [
        "| input | message (stderr, the trial's run) | what happened | exit | trials failed "
        "| trials lost | other figures | test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    shown = {"case", "test", "input", "message", "outcome", "exit_code", "trials_failed"}
    shown.add("trials_lost")
    for rec in records:
        if rec["case"] == MID_SWEEP:
            message = rec["message"].replace("|", "\\|")
            other = ", ".join(
                f"{k.replace('_', ' ')} {v}" for k, v in rec.items() if k not in shown
            )
            rows.append(
                f"| {rec['input']} | `{message}` | {rec['outcome']} | {rec['exit_code']} "
                f"| {rec['trials_failed']} | {rec.get('trials_lost', '-')} | {other} "
                f"| `{rec['test'].split('::')[0]}` |"
            )
    return rows


SECURITY = """
## Security

- Loading a pulled model or a checkpoint never unpickles: weights, optimiser and RNG state
  are one safetensors file, the config is JSON in its header. A registered model whose weights
  were replaced by a pickle carrying a shell command is refused by `vae-sweep pull` and
  `vae-sweep sample`, and the command never runs
  (`tests/test_bad_input.py::test_weights_replaced_by_a_pickle_are_refused_without_running_it`).
- A registered version records the sha256 of its weights file (tag `vae_sweep.weights_sha256`,
  in the tracking store, apart from the artifact store); `vae-sweep pull`, `load_model` and
  the pyfunc form (against the hash saved in its MLmodel) refuse weights changed after
  registration, naming the version and both hashes; a version registered before the tag
  loads with a warning that it is unverified
  (`tests/test_bad_input.py::test_weights_changed_after_registration_are_refused_naming_the_version`).
- Who may do what on the tracking server: a reader (`python docker/team-user.py NAME --role
  reader`) browses and pulls; creating or logging to the team's runs, registering, moving an
  alias and deleting are refused with 403, naming the permission and who grants it; a writer
  may do them (`tests/test_permissions.py`, on a real server with PostgreSQL).
- The tracking server (`docker/compose.yaml`, `docker/tracking-server.sh`) runs with
  basic-auth on and has no default password or key: it refuses to start, naming the variable,
  without them (`tests/test_tracking_server.py`, `tests/test_docker_files.py`).
- The launcher configs and the KubeRay manifest hold no secret (credentials come from a file
  outside the repository, a Kubernetes Secret, or instance roles) and bind the Ray dashboard
  to localhost or a ClusterIP service (`tests/test_cluster_configs.py`).
- `--resume` runs Tune's restore, which unpickles the sweep's saved experiment state. It is
  done only from a local storage path owned by the user and writable by nobody else
  (`sweeps/preflight.py::check_own_state`, `tests/test_preflight.py`); on `s3://` storage the
  bucket's access rights are the guard. Resume only sweeps you started.

## Checks before compute

Before any trial starts, a sweep prepares the data on the driver (an empty folder or one of
non-images fails there; a `--data-path` file of another dataset, image size or colour is
refused naming what it holds and what the config asks), checks that `--storage-path` is
writable and, when local, has room for every trial's checkpoints (about trials x 2 x the
model's weights and Adam moments), that some node can hold one trial's CPUs and GPUs (on a
cluster that may grow, it only warns), and runs a zero-CPU task on every live node that can
run trials to check it can read the data (`tests/test_preflight.py`, on a real three-node Ray
and a 2 MiB tmpfs). A disk that fills up later fails the checkpointing trial with the path
and what to do; the trial resumes from its previous checkpoint with `--resume`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records",
        type=Path,
        help="write from the figures a passing test run already recorded in this file "
        "(VAE_SWEEP_RECORD=FILE python -m pytest) instead of running the tests",
    )
    parser.add_argument("--commit", default=None, help="the commit the records were made at")
    parser.add_argument("--note", default="", help="a sentence on how the run went")
    args = parser.parse_args()
    if args.records:
        text = args.records.read_text()
        source = f"recorded by the test suite (`VAE_SWEEP_RECORD={args.records.name} python -m "
        source += "pytest -q`), written by `python benchmarks/reliability.py --records`"
    else:
        with tempfile.TemporaryDirectory() as folder:
            records_file = Path(folder) / "records.jsonl"
            code = run_tests(records_file)
            text = records_file.read_text() if records_file.exists() else ""
        if code != 0:
            raise SystemExit(f"fault tests failed (pytest exit {code}); RELIABILITY.md unchanged")
        source = f"written by `{command()}`"
    records = [json.loads(line) for line in text.splitlines()]
    save_json("reliability", {"records": records})
    body = [
        "# Reliability",
        "",
        f"Figures {source}, at commit {args.commit or commit()} on {machine()}. Every row is "
        "a test on real components (a local or loopback multi-node Ray, SQLite or a real "
        "`mlflow server`); the tests assert the outcome, the figures are what they measured. "
        + args.note,
        "",
        "## Faults",
        "",
        *fault_rows(records),
        "",
        "s to recover: seconds from the fault (or from `--resume`) to the next epoch the "
        "affected trials logged, so one epoch of training (about 3 s here) is included.",
        "",
        "## Bad input",
        "",
        "Each case exits non-zero before any trial starts and leaves the MLflow store (runs, "
        "model versions, aliases) exactly as it was.",
        "",
        *input_rows(records),
        "",
        "## Bad input met mid-sweep",
        "",
        "Contained: the trial it hits restarts or fails alone, saying why on stderr and on its "
        "MLflow run; the other trials finish; no metric point is logged twice; a trial that "
        "could only fail the same way again is not retried (one Ray's OOM killer stopped is: "
        "its node's memory may free up; Tune retries it at most twice).",
        "",
        *mid_sweep_rows(records),
        SECURITY,
        "\n\n".join(sections(DOC)),  # what other scripts wrote here (tracking_load.py)
    ]
    tmp = DOC.with_name(f".{DOC.name}.tmp")
    tmp.write_text("\n".join(body).rstrip() + "\n")
    os.replace(tmp, DOC)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
