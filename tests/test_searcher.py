"""The sweep's TPE: its settings reach Optuna, and --warm-start tells a new sweep's
TPE an earlier sweep's finished and early-stopped trials that lie in its space before it
proposes; what cannot be told is refused before anything starts, naming the flag. (The
end-to-end sweeps: tests/test_sweep.py.)"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState
from ray import tune

from sweeps.searcher import (
    DEFAULT_TPE,
    TPE,
    TRIAL_INDEX,
    earlier_trials,
    make_searcher,
    tell_held_back,
)
from sweeps.spec import SpecError, parse_spec

NARROW = {"latent_dim": tune.choice([4, 8]), "kl_weight": tune.loguniform(0.5, 2.0)}
WIDE = {"latent_dim": tune.choice([4, 8, 16]), "kl_weight": tune.loguniform(0.1, 10.0)}


@pytest.fixture
def earlier(tmp_path):
    """A finished sweep's study, as PruningAwareOptunaSearch leaves it: 3 complete trials, 2
    stopped early by ASHA (pruned, with their curve), 1 failed, 1 left running."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = make_searcher("earlier", url, seed=0, max_epochs=3, tpe=TPE(startup=2))
    searcher.set_search_properties("val_bpd", "min", NARROW)
    for n in range(7):
        searcher.suggest(f"t{n}")
    for n in range(3):
        searcher.on_trial_complete(f"t{n}", {"val_bpd": 1.0 + n, "training_iteration": 3})
    for n in (3, 4):
        searcher.on_trial_result(f"t{n}", {"val_bpd": 9.0, "training_iteration": 1})
        searcher.on_trial_complete(f"t{n}", {"val_bpd": 8.0 + n, "training_iteration": 2})
    searcher.on_trial_complete("t5", None, error=True)
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune's last save, then the engine tells
    tell_held_back("earlier", url)
    return url


def states(url: str, name: str) -> list[str]:
    return [t.state.name for t in optuna.load_study(study_name=name, storage=url).trials]


def test_an_ended_trial_is_told_once_tune_has_saved_that_it_ended(tmp_path):
    """Tune saves its state (the searcher's first) every 10 s or more, the study is written at
    once: a trial is told to the study at the save after Tune's, or on a restore from the
    save that held it back, so that a driver killed in between never leaves the study saying
    a trial ended that the resumed sweep runs again."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = make_searcher("s", url, seed=0, max_epochs=3)
    searcher.set_search_properties("val_bpd", "min", NARROW)
    for n in range(4):
        searcher.suggest(f"t{n}")
    searcher.on_trial_result("t1", {"val_bpd": 9.0, "training_iteration": 1})
    searcher.on_trial_complete("t0", {"val_bpd": 2.0, "training_iteration": 3})
    searcher.on_trial_complete("t1", {"val_bpd": 8.0, "training_iteration": 2})  # ASHA
    assert states(url, "s") == ["RUNNING"] * 4
    searcher.save(str(tmp_path / "first.pkl"))  # Tune's state saved next says they ended
    assert states(url, "s") == ["RUNNING"] * 4
    searcher.on_trial_result("t2", {"val_bpd": 5.0, "training_iteration": 1})
    searcher.on_trial_complete("t2", {"val_bpd": 5.0, "training_iteration": 1}, error=True)
    searcher.save(str(tmp_path / "second.pkl"))
    assert states(url, "s") == ["COMPLETE", "PRUNED", "RUNNING", "RUNNING"]
    pruned = optuna.load_study(study_name="s", storage=url).trials[1]
    assert pruned.intermediate_values == {1: 9.0, 2: 8.0} and pruned.value == 8.0

    # the driver dies; a new one restores the second save: its held-back t2 ended (Ray's
    # OptunaSearch would tell COMPLETE, as t2 had reported a value before failing)
    again = make_searcher("s", url, seed=0, max_epochs=3)
    again.restore(str(tmp_path / "second.pkl"))
    assert states(url, "s") == ["COMPLETE", "PRUNED", "FAIL", "RUNNING"]
    # restored from the first save (its upload the last to land): told again, no change
    first = make_searcher("s", url, seed=0, max_epochs=3)
    first.restore(str(tmp_path / "first.pkl"))
    assert states(url, "s") == ["COMPLETE", "PRUNED", "FAIL", "RUNNING"]


def test_a_wider_space_starts_from_every_told_trial_and_numbers_its_own_from_0(earlier, tmp_path):
    trials, left_out = earlier_trials("earlier", earlier, WIDE, ["min"])
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED] * 2
    assert left_out == 2  # the failed trial and the one left running
    url = f"sqlite:///{tmp_path / 'new.db'}"
    searcher = make_searcher("new", url, seed=1, max_epochs=3, warm_start=trials)
    searcher.set_search_properties("val_bpd", "min", WIDE)
    proposed = searcher.suggest("first")
    assert proposed[TRIAL_INDEX] == 0  # the new sweep's first trial: seed + 0, named 0
    study = optuna.load_study(study_name="new", storage=url)
    told = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert [(t.params, t.values, t.state) for t in told] == [
        (t.params, t.values, t.state) for t in trials
    ]
    assert told[3].intermediate_values == {1: 9.0, 2: 11.0}  # the pruned trial's curve
    assert study.trials[-1].state == TrialState.RUNNING  # then the new sweep's own


def test_trials_outside_the_new_space_are_left_out(earlier):
    narrower = {**NARROW, "kl_weight": tune.loguniform(0.5, 1.0)}
    trials, left_out = earlier_trials("earlier", earlier, narrower, ["min"])
    assert all(0.5 <= t.params["kl_weight"] <= 1.0 for t in trials)
    assert len(trials) + left_out == 7


@pytest.mark.parametrize(
    ("space", "modes", "message"),
    [
        (
            {"latent_dim": tune.choice([32, 64]), "kl_weight": NARROW["kl_weight"]},
            ["min"],
            "none of its 5 finished or stopped trials lies in this sweep's space",
        ),
        ({"lr": tune.loguniform(1e-4, 1e-2)}, ["min"], "none of its 5"),
        (WIDE, ["max"], "that sweep's study was to minimize, this one is to maximize"),
        (WIDE, ["min", "min"], "that sweep.s study was to minimize, this one is to minimize and"),
    ],
)
def test_what_cannot_be_told_is_refused_naming_the_flag(earlier, space, modes, message):
    with pytest.raises(ValueError, match=f"--warm-start earlier: {message}"):
        earlier_trials("earlier", earlier, space, modes)


def test_warm_start_brings_tpe_and_needs_another_sweep():
    def spec(*flags):
        argv = ["--tracking-uri", "sqlite:///x.db", "--name", "new", *flags]
        return parse_spec(WIDE, {"dataset": "shapes"}, argv)

    assert spec("--warm-start", "old").warm_start == "old"
    assert spec("--warm-start", "old").search == "tpe"  # random is the default of other sweeps
    assert spec().search == "random"
    assert "warm_start" in spec("--warm-start", "old").kept()  # --resume keeps it
    with pytest.raises(SpecError, match="--warm-start old: .* leave --search out"):
        spec("--warm-start", "old", "--search", "random")
    with pytest.raises(SpecError, match="--warm-start new: the sweep's own name; .* --resume"):
        spec("--warm-start", "new")


def test_tpe_settings_reach_optuna_and_the_default_is_optuna_s_own():
    assert DEFAULT_TPE == TPE(startup=10, multivariate=False, constant_liar=False)
    sampler = TPE(startup=3, multivariate=True, constant_liar=True).sampler(seed=0)
    assert (sampler._n_startup_trials, sampler._multivariate, sampler._constant_liar) == (
        3,
        True,
        True,
    )
