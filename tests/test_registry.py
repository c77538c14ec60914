"""Registration into a real MLflow registry (SQLite): idempotent per sweep, a champion chosen
on validation among versions of one comparability key, and one that settles on the best
version when sweeps register into one model at once."""

import pytest
from conftest import make_splits, migrated_store, tiny_config
from mlflow.tracking import MlflowClient

from sweeps import cli
from sweeps.registry import (
    KEY,
    _ensure_registered_model,
    check_name,
    log_and_register,
    using_tracking_uri,
)
from vae_core import fit


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.safetensors"
    fit(tiny_config(epochs=1), make_splits()).save(path)
    return path


@pytest.fixture
def store(tmp_path):
    uri = migrated_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    return uri, client, experiment


MNIST = "mnist/28px/1ch/center/all/val0.1/continuous"


def tags(sweep_run_id: str, val_bpd: float, test_bpd: float, key: str = MNIST):
    return {
        KEY: key,
        "val_bpd": str(val_bpd),
        "test_bpd": str(test_bpd),
        "sweep_run_id": sweep_run_id,
    }


def register(store, checkpoint, sweep: str, val_bpd: float, test_bpd=5.0, key=MNIST):
    uri, client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    return log_and_register(uri, run_id, checkpoint, "m", tags(sweep, val_bpd, test_bpd, key))


def aliases(client):
    return {k: str(v) for k, v in client.get_registered_model("m").aliases.items()}


def test_a_sweep_registers_once_however_often_it_finishes(store, checkpoint):
    first = register(store, checkpoint, "sweep-a", 5.0)
    again = register(store, checkpoint, "sweep-a", 5.0)  # e.g. resumed after its driver died
    client = store[1]
    assert (first.version, first.alias) == ("1", "champion") and again.version == "1"
    assert len(client.search_model_versions("name = 'm'")) == 1


def test_champion_moves_only_to_a_better_version_of_the_same_key(store, checkpoint):
    client = store[1]
    assert register(store, checkpoint, "a", 5.0).alias == "champion"
    worse = register(store, checkpoint, "b", 6.0)
    assert (worse.alias, worse.previous_champion) == ("challenger", "1")
    other_data = register(store, checkpoint, "c", 1.0, key=MNIST.replace("continuous", "binary"))
    assert other_data.alias == "challenger"  # not comparable: the champion stays
    better = register(store, checkpoint, "d", 4.0)
    assert (better.alias, better.previous_champion) == ("champion", "1")
    assert aliases(client) == {"champion": "4", "challenger": "3"}


def test_the_champion_is_chosen_on_validation_and_the_test_split_only_reports(store, checkpoint):
    client = store[1]
    register(store, checkpoint, "a", val_bpd=5.0, test_bpd=5.0)
    # Better on the test split, worse on validation: test numbers never promote.
    assert register(store, checkpoint, "b", val_bpd=5.5, test_bpd=3.0).alias == "challenger"
    assert register(store, checkpoint, "c", val_bpd=4.5, test_bpd=6.0).alias == "champion"
    model = client.get_registered_model("m")
    assert "lowest val_bpd on the validation split" in model.description
    assert "reported and never compared" in model.description and "test_bpd" in model.description
    assert model.tags == {
        KEY: MNIST,
        "vae_sweep.promoted_on": "val_bpd",
        "vae_sweep.promoted_mode": "min",
    }


def test_a_score_promotes_the_highest(store, checkpoint):
    """A model promoted on a score (--objective val_mig): the highest wins, and a version
    without the score never does."""
    uri, client, experiment = store

    def register_mig(sweep: str, mig: float | None):
        run_id = client.create_run(experiment).info.run_id
        tags = {KEY: MNIST, "sweep_run_id": sweep, "test_bpd": "5"}
        if mig is not None:
            tags["val_mig"] = str(mig)
        return log_and_register(uri, run_id, checkpoint, "m", tags, "val_mig", "max")

    assert register_mig("a", 0.2).alias == "champion"
    assert register_mig("b", 0.1).alias == "challenger"
    assert register_mig("c", None).alias == "challenger"
    assert register_mig("d", 0.3).alias == "champion"
    assert "the highest val_mig" in client.get_registered_model("m").description


def test_a_sweep_of_another_key_is_refused_by_name_before_it_starts(store, checkpoint):
    uri = store[0]
    check_name(uri, "m", MNIST)  # no such model yet: anything goes
    register(store, checkpoint, "a", 5.0)
    check_name(uri, "m", MNIST)
    binary = MNIST.replace("continuous", "binary")
    with pytest.raises(ValueError, match=f"registered model m holds models of {MNIST}.*{binary}"):
        check_name(uri, "m", binary)


def test_a_model_registered_before_keys_is_adopted_and_its_old_champion_replaced(
    store, checkpoint
):
    """A registry from before comparability keys: versions and model without the tag. The
    first sweep with keys adopts the name, and its version becomes champion (the old one is
    of no known key, so it is not compared)."""
    uri, client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    client.create_registered_model("m")
    source = log_and_register(uri, run_id, checkpoint, "other", tags("x", 1.0, 1.0))
    old = client.get_model_version("other", source.version).source
    with using_tracking_uri(uri):
        client.create_model_version("m", old, run_id=run_id, tags={"val_bpd": "0.1"})
    client.set_registered_model_alias("m", "champion", "1")
    check_name(uri, "m", MNIST)  # no key recorded: not refused
    registered = register(store, checkpoint, "a", 5.0)
    assert (registered.version, registered.alias) == ("2", "champion")
    assert client.get_registered_model("m").tags[KEY] == MNIST


def test_two_sweeps_registering_at_once_leave_the_better_one_champion(store, checkpoint):
    uri, client, experiment = store
    register(store, checkpoint, "a", 5.0)
    # Sweep b registered version 2 (better) but has not settled its aliases yet when sweep c
    # registers version 3 (worse) and settles: the better version must still win.
    run_id = client.create_run(experiment).info.run_id
    source = client.get_model_version("m", "1").source
    with using_tracking_uri(uri):
        client.create_model_version("m", source, run_id=run_id, tags=tags("b", 3.0, 5.0))
    late = register(store, checkpoint, "c", 4.0)
    assert late.alias == "challenger" and aliases(client)["champion"] == "2"


def test_the_registered_model_is_created_once_whoever_comes_second(store):
    """Two sweeps finishing together both find no model and both create it: the second
    create is refused by the store and taken as done (the race CI once hit, as a crash)."""
    uri, client, _ = store
    _ensure_registered_model(client, "m", MNIST, "val_bpd")
    _ensure_registered_model(client, "m", MNIST, "val_bpd")  # the other sweep, a moment later
    assert [m.name for m in client.search_registered_models()] == ["m"]


def test_registering_leaves_the_sweep_run_as_it_was(store, checkpoint):
    """The sweep's parent run is still RUNNING after registration (plots, tags and the
    summary come after it): only its owner ends it, once, with the sweep's true status."""
    uri, client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    registered = log_and_register(uri, run_id, checkpoint, "m", tags(run_id, 5.0, 5.0))
    assert client.get_run(run_id).info.status == "RUNNING"
    version = client.get_model_version("m", registered.version)
    model_id = version.source.removeprefix("models:/")
    logged = client.get_logged_model(model_id)
    assert (logged.source_run_id, str(logged.status)) == (run_id, "READY")
    assert logged.experiment_id == experiment
    outputs = client.get_run(run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [model_id]


def test_vae_sweep_promote_moves_the_champion_by_hand_and_keeps_why(store, checkpoint, capsys):
    uri, client, _ = store
    register(store, checkpoint, "a", 5.0)
    register(store, checkpoint, "b", 6.0)  # worse on validation: challenger
    assert aliases(client) == {"champion": "1", "challenger": "2"}
    flags = ["--tracking-uri", uri]
    with pytest.raises(SystemExit) as refused:  # no reason, no promotion
        cli.main(["promote", "m", "2", *flags])
    assert refused.value.code == 2 and "--reason" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["promote", "m", "7", "--reason", "x", *flags])
    assert "m has no version 7: versions 1, 2" in capsys.readouterr().err
    assert cli.main(["promote", "m", "2", "--reason", "sharper samples", *flags]) == 0
    said = capsys.readouterr().err
    assert "m version 2 is @champion (was version 1): sharper samples" in said
    assert aliases(client) == {"champion": "2"}  # no longer the challenger too
    why = client.get_model_version("m", "2").tags["vae_sweep.promoted"]
    assert why.startswith("sharper samples (by ")


def test_a_hand_promotion_stands_until_a_version_registered_after_it_beats_it(
    store, checkpoint, capsys
):
    """The champion moved by hand (or --pick) is not undone by the next registration: the
    versions it passed over are not compared again, only those registered after it."""
    uri, client, _ = store
    register(store, checkpoint, "a", 5.0)  # 1: champion
    register(store, checkpoint, "b", 6.0)  # 2: challenger
    register(store, checkpoint, "c", 5.5)  # 3: challenger, better than 2
    assert cli.main(["promote", "m", "2", "--reason", "sharper", "--tracking-uri", uri]) == 0
    # 3 (5.5) is better than the new champion 2 (6.0): it no longer stands as its challenger.
    assert aliases(client) == {"champion": "2"}
    worse = register(store, checkpoint, "d", 7.0)  # worse than every version
    assert (worse.alias, worse.previous_champion) == ("challenger", "2")
    assert aliases(client) == {"champion": "2", "challenger": "4"}
    better = register(store, checkpoint, "e", 5.8)  # registered after the choice, beats it
    assert (better.alias, better.previous_champion) == ("champion", "2")
    assert aliases(client) == {"champion": "5", "challenger": "4"}
    said = client.get_model_version("m", "5").tags["vae_sweep.champion_since"]
    assert said == "5"  # the newest version when it became champion


def test_a_version_of_another_key_cannot_be_promoted_by_hand(store, checkpoint, capsys):
    uri, client, _ = store
    register(store, checkpoint, "a", 5.0)
    register(store, checkpoint, "b", 1.0, key=MNIST.replace("continuous", "binary"))
    with pytest.raises(SystemExit) as refused:
        cli.main(["promote", "m", "2", "--reason", "x", "--tracking-uri", uri])
    assert refused.value.code == 2
    assert "version 2 holds a model of mnist/28px/1ch/center/all/val0.1/binary" in (
        capsys.readouterr().err
    )
    assert aliases(client) == {"champion": "1", "challenger": "2"}


def test_deleting_the_champion_elects_the_best_version_left(store, checkpoint, capsys):
    uri, client, _ = store
    register(store, checkpoint, "a", 5.0)
    register(store, checkpoint, "b", 6.0)
    register(store, checkpoint, "c", 5.5)
    assert cli.main(["delete", "m", "1", "--tracking-uri", uri]) == 0
    assert "m version 1 deleted; @champion is now version 3" in capsys.readouterr().err
    assert aliases(client) == {"champion": "3"}  # it was the challenger: no longer
    assert cli.main(["delete", "m", "3", "--tracking-uri", uri]) == 0
    assert aliases(client) == {"champion": "2"}
    assert cli.main(["delete", "m", "2", "--tracking-uri", uri]) == 0
    assert "@champion is now none (no version of its key left)" in capsys.readouterr().err
