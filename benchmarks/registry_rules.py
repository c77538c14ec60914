"""The registry's rules at length: tests/test_registry_rules.py's Hypothesis state machine
(registrations of two keys, hand promotions, --pick choices, deletions, two sweeps registering
at once, on a real SQLite store) run far past the suite's few dozen steps, with randomised
draws, and every violation of the rules counted.

    python benchmarks/registry_rules.py                       # ~12,000 steps, 27 min
    python benchmarks/registry_rules.py --examples 8 --steps 25   # a short look

Writes benchmarks/results/registry_rules.json and the "Registry rules" section of
docs/RELIABILITY.md. It runs the test in its own pytest process (the machine is the test's:
one copy, no import across tests/ and benchmarks/).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _report import REPO, command, commit, machine, save_json, write_section

RELIABILITY = REPO / "docs" / "RELIABILITY.md"
TEST = "tests/test_registry_rules.py"


def run(examples: int, steps: int) -> dict:
    """One pytest run of the state machine; the counts it wrote and its wall time."""
    import subprocess

    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "counts.json"
        env = {
            **os.environ,
            "REGISTRY_RULES_EXAMPLES": str(examples),
            "REGISTRY_RULES_STEPS": str(steps),
            "REGISTRY_RULES_REPORT": str(report),
        }
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:logging",
                TEST,
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - started
        counts = json.loads(report.read_text()) if report.exists() else {}
    failure = "" if done.returncode == 0 else done.stdout[-4000:]
    return {**counts, "seconds": round(seconds, 1), "passed": done.returncode == 0,
            "failure": failure}  # fmt: skip


def report(result: dict, examples: int, steps: int) -> str:
    met = result["passed"] and result["violations"] == 0 and result["steps"] >= 10_000
    failure = f"\nThe failure:\n```\n{result['failure']}\n```" if result["failure"] else ""
    return f"""## Registry rules: a state machine of {result["steps"]:,} steps

`{command()}` at commit {commit()} on {machine()}: {result["seconds"] / 60:.0f} min.

`{TEST}`'s Hypothesis state machine ({examples} examples asked, {result["machines"]} machines
run) of up to {steps} steps with random draws, each a new registered model in one real SQLite
store: registrations of random
`val_bpd` values (some missing) under the model's key and, one in ten, another key; hand
promotions (`vae-sweep promote`) and `--pick` choices; deletions (`vae-sweep delete`); two
sweeps registering at once from two threads. After every step the store's aliases are checked
against a plain model of the rules (README, "The registry's rules").

| figure | count |
|---|---|
| machines | {result["machines"]} |
| steps | {result["steps"]:,} |
| registrations | {result["registrations"]:,} |
| violations | {result["violations"]} |

Target: 10,000 steps, zero violations: **{"met" if met else "not met"}**.
{failure}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=500, help="examples (default 500)")
    parser.add_argument("--steps", type=int, default=25, help="steps per machine (default 25)")
    args = parser.parse_args()
    result = run(args.examples, args.steps)
    save_json("registry_rules", {"examples": args.examples, "max_steps": args.steps, **result})
    write_section("registry_rules", report(result, args.examples, args.steps), doc=RELIABILITY)
    if not result["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
