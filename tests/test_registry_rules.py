"""The registry's champion/challenger rules, proven by a Hypothesis state machine on a real
SQLite MLflow store: random registrations (two keys, random metric values, some without the
metric), hand promotions (`vae-sweep promote`), `--pick` choices, deletions and two sweeps
registering at once, each through the code users run. After every step the store must agree
with a plain model of the rules (sweeps/registry.py's docstring):

- exactly one champion while a version of the model's key exists, none otherwise;
- the champion is the hand-chosen or picked version until a version registered after that
  choice beats it on the model's metric;
- a challenger is never better than the champion on its key;
- no version of another key ever becomes champion;
- what `log_and_register` returned (its alias, the previous champion) is what the store says.

Its size comes from the environment, for benchmarks/registry_rules.py's long run:
REGISTRY_RULES_EXAMPLES (default 6) machines of REGISTRY_RULES_STEPS (default 12) steps;
REGISTRY_RULES_REPORT names a JSON file to write the counts into.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from pathlib import Path

import pytest
from conftest import make_splits, migrated_store, tiny_config
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from mlflow.models.utils import MockDbutils
from mlflow.tracking import MlflowClient

from sweeps import browse
from sweeps.registry import CHALLENGER, CHAMPION, KEY, PICKED, log_and_register, make_champion
from vae_core import fit

EXAMPLES = int(os.environ.get("REGISTRY_RULES_EXAMPLES", "6"))
STEPS = int(os.environ.get("REGISTRY_RULES_STEPS", "12"))
REPORT = os.environ.get("REGISTRY_RULES_REPORT")

MODEL_KEY = "mnist/28px/1ch/center/all/val0.1/continuous"
OTHER_KEY = "mnist/28px/1ch/center/all/val0.1/binary"  # e.g. registered before check_name
# Few distinct values, so that ties (the champion stays; else the oldest wins) happen often;
# None: a version without the metric, which never wins.
VALUES = st.one_of(st.sampled_from([4.0, 4.5, 5.0, 5.5, 6.0]), st.none())
KEYS = st.sampled_from([MODEL_KEY] * 9 + [OTHER_KEY])


def score(value: float | None) -> float:
    return float("inf") if value is None else value


class Rules:
    """The registry's rules as plain bookkeeping: what the store must say."""

    def __init__(self) -> None:
        self.versions: dict[int, tuple[str, float | None]] = {}  # number -> (key, value)
        self.champion: int | None = None
        self.since = 0  # the newest version when the champion last moved
        self.challenger: int | None = None

    def ours(self) -> list[int]:
        return sorted(n for n, (key, _) in self.versions.items() if key == MODEL_KEY)

    def best(self, numbers: list[int]) -> int:
        """The lowest value; the first of equals (callers put the champion first)."""
        return min(numbers, key=lambda n: score(self.versions[n][1]))

    def settle(self, number: int) -> tuple[str, int | None]:
        """A registration of `number` settles: its alias and the previous/standing champion."""
        before = self.champion
        rivals = [n for n in self.ours() if n > (self.since if before else 0)]
        contenders = ([before] if before else []) + rivals
        if not contenders:  # only versions of another key: none can be champion
            self.challenger = number
            return CHALLENGER, None
        best = self.best(contenders)
        if best != before:
            self.champion, self.since = best, max(self.versions)
        if self.champion == number:
            if self.challenger == number:
                self.challenger = None
            return CHAMPION, before
        self.challenger = number
        return CHALLENGER, self.champion

    def choose(self, number: int) -> None:
        """A hand promotion or --pick."""
        self.champion, self.since = number, max(self.versions)
        if self.challenger is not None and (
            self.challenger == number
            or (
                self.versions[self.challenger][0] == MODEL_KEY
                and score(self.versions[self.challenger][1]) < score(self.versions[number][1])
            )
        ):
            self.challenger = None

    def delete(self, number: int) -> None:
        del self.versions[number]
        if self.challenger == number:
            self.challenger = None
        if self.champion != number:
            return
        self.champion = None
        if ours := self.ours():
            self.champion, self.since = self.best(ours), max(self.versions)
            if self.challenger == self.champion:
                self.challenger = None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.safetensors"
    fit(tiny_config(epochs=1), make_splits(32)).save(path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rules")
    uri = migrated_store(folder / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(folder / "a").as_uri())
    return uri, client, experiment


def test_the_registry_keeps_its_rules_whatever_happens(store, checkpoint):
    uri, client, experiment = store
    counts = {"machines": 0, "steps": 0, "registrations": 0, "violations": 0}

    class Registry(RuleBasedStateMachine):
        numbers = Bundle("numbers")

        def __init__(self) -> None:
            super().__init__()
            self.name = f"m-{uuid.uuid4().hex[:8]}"  # a new registered model per machine
            self.rules = Rules()
            counts["machines"] += 1

        def _register(self, key: str, value: float | None):
            run_id = client.create_run(experiment).info.run_id
            tags = {KEY: key, "sweep_run_id": uuid.uuid4().hex, "test_bpd": "9"}
            if value is not None:
                tags["val_bpd"] = str(value)
            counts["registrations"] += 1
            return log_and_register(uri, run_id, checkpoint, self.name, tags)

        def _step(self) -> None:
            counts["steps"] += 1

        @rule(target=numbers, key=KEYS, value=VALUES)
        def register(self, key, value):
            self._step()
            if not self.rules.versions:
                key = MODEL_KEY  # the first registration sets the model's key
            said = self._register(key, value)
            number = int(said.version)
            self.rules.versions[number] = (key, value)
            alias, champion = self.rules.settle(number)
            assert (said.alias, said.previous_champion) == (
                alias,
                None if champion is None else str(champion),
            )
            return number

        @rule(values=st.tuples(VALUES, VALUES))
        def two_sweeps_register_at_once(self, values):
            self._step()
            if not self.rules.versions:
                return
            said = [None, None]

            def one(i: int) -> None:
                said[i] = self._register(MODEL_KEY, values[i])

            tracking_uri_before = os.environ.get("MLFLOW_TRACKING_URI")
            threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            # MLflow's _mock_dbutils (mlflow/models/utils.py) swaps sys.modules["dbutils"]
            # while loading a pyfunc's code: two threads in it at once leave its mock there
            # (the second restores the first's), and Hypothesis' scan of sys.modules then
            # fails on it. Two sweeps are two processes; these threads share one.
            if isinstance(sys.modules.get("dbutils"), MockDbutils):
                del sys.modules["dbutils"]
            assert all(said), "a registration failed"
            # nothing of one registration's process-wide settings outlives it
            assert os.environ.get("MLFLOW_TRACKING_URI") == tracking_uri_before
            numbers = sorted(int(s.version) for s in said)
            by_number = {int(s.version): v for s, v in zip(said, values, strict=True)}
            for number in numbers:
                self.rules.versions[number] = (MODEL_KEY, by_number[number])
            # Whatever the interleaving, both are compared: as if registered in number order.
            for number in numbers:
                self.rules.settle(number)
            losers = [n for n in numbers if n != self.rules.champion]
            found = self._aliases().get(CHALLENGER)
            assert found in losers or (not losers and found == self.rules.challenger)
            self.rules.challenger = found
            for s in said:  # a version said to have lost did not win after all
                if s.alias == CHALLENGER:
                    assert int(s.version) != self.rules.champion

        @precondition(lambda self: self.rules.versions)
        @rule(data=st.data(), by_hand=st.booleans())
        def choose(self, data, by_hand):
            self._step()
            number = data.draw(st.sampled_from(sorted(self.rules.versions)))
            if self.rules.versions[number][0] != MODEL_KEY:
                with pytest.raises(ValueError, match="holds a model of"):
                    make_champion(uri, self.name, str(number), "other key", PICKED)
                return
            if by_hand:  # what `vae-sweep promote` runs
                browse.promote(uri, self.name, str(number), "by hand")
            else:  # a front's --pick
                make_champion(uri, self.name, str(number), "max-rate=3", PICKED)
            self.rules.choose(number)

        @precondition(lambda self: len(self.rules.versions) > 1)
        @rule(number=consumes(numbers))
        def delete(self, number):
            self._step()
            if number not in self.rules.versions:
                return
            browse.delete(uri, self.name, str(number))  # what `vae-sweep delete` runs
            self.rules.delete(number)

        def _aliases(self) -> dict[str, int]:
            if not self.rules.versions:
                return {}
            model = client.get_registered_model(self.name)
            return {a: int(v) for a, v in model.aliases.items()}

        @invariant()
        def the_store_says_what_the_rules_say(self):
            aliases = self._aliases()
            champion = aliases.get(CHAMPION)
            try:
                if self.rules.ours():
                    assert champion is not None, "no champion while versions of its key exist"
                    assert self.rules.versions[champion][0] == MODEL_KEY, "another key's champion"
                else:
                    assert champion is None
                assert champion == self.rules.champion, (
                    f"champion {champion}, the rules say {self.rules.champion}"
                )
                if (challenger := aliases.get(CHALLENGER)) is not None:
                    assert challenger != champion
                    key, value = self.rules.versions[challenger]
                    if key == MODEL_KEY:
                        best = score(self.rules.versions[champion][1])
                        assert score(value) >= best, "a challenger better than the champion"
                assert aliases.get(CHALLENGER) == self.rules.challenger
            except AssertionError:
                counts["violations"] += 1
                raise

    try:
        run_state_machine_as_test(
            Registry,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                derandomize=REPORT is None,  # the suite repeats itself; the long run explores
                database=None,  # no .hypothesis folder in the checkout
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        if REPORT:
            Path(REPORT).write_text(json.dumps(counts))
    assert counts["steps"] >= EXAMPLES  # the machine ran
