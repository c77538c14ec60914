"""SweepSpec: built once from the script's space, base config, defaults and the command line;
frozen; on --resume it keeps what the sweep was started with. And readable search spaces."""

import dataclasses

import pytest
from ray import tune

from sweeps.space import describe, describe_space
from sweeps.spec import SpecError, parse_spec

SPACE = {"latent_dim": tune.choice([4, 8]), "kl_weight": tune.loguniform(0.1, 10.0)}
BASE = {"dataset": "shapes", "arch": "conv"}


def spec(*flags, defaults=None, space=SPACE):
    return parse_spec(space, BASE, ["--tracking-uri", "sqlite:///x.db", *flags], defaults)


@pytest.mark.parametrize(
    ("domain", "text"),
    [
        (tune.loguniform(0.1, 10.0), "loguniform(0.1, 10)"),
        (tune.uniform(0.0, 0.5), "uniform(0, 0.5)"),
        (tune.quniform(0.0, 1.0, 0.25), "quniform(0, 1, 0.25)"),
        (tune.randint(1, 10), "randint(1, 10)"),
        (tune.lograndint(1, 100), "lograndint(1, 100)"),
        (tune.randn(0.0, 2.0), "randn(0, 2)"),
        (tune.choice([8, 16, 32]), "choice([8, 16, 32])"),
        (tune.choice(["gaussian", "bernoulli"]), "choice(['gaussian', 'bernoulli'])"),
        (tune.grid_search([2, 4]), "grid_search([2, 4])"),
        (0.001, "0.001"),
    ],
)
def test_a_domain_reads_as_it_was_written(domain, text):
    assert describe(domain) == text
    assert "object at 0x" not in describe_space({"x": domain})["x"]


def test_defaults_then_smoke_test_then_the_command_line():
    plain = spec(defaults={"num_samples": 8, "max_epochs": 6})
    assert (plain.num_samples, plain.max_epochs, plain.image_every) == (8, 6, 5)
    smoke = spec("--smoke-test", defaults={"num_samples": 8})
    assert (smoke.num_samples, smoke.max_epochs, smoke.image_every) == (2, 2, 1)
    assert smoke.base.data.limit == 256  # the smoke test's data
    typed = spec("--smoke-test", "--max-epochs", "3")
    assert typed.max_epochs == 3 and typed.given == {"smoke_test", "max_epochs", "tracking_uri"}
    assert typed.command.endswith(" --tracking-uri sqlite:///x.db --smoke-test --max-epochs 3")


def test_the_spec_is_frozen_and_checked_whenever_it_is_built():
    made = spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.max_epochs = 3
    with pytest.raises(TypeError):
        made.space["lr"] = tune.loguniform(1e-4, 1e-2)
    with pytest.raises(SpecError, match="--max-epochs: got 0; expected >= 1"):
        dataclasses.replace(made, max_epochs=0)


def test_a_resumed_spec_keeps_what_the_sweep_started_with():
    started = spec("--num-samples", "5", "--scheduler", "fifo", "--seed", "3", "--name", "s")
    resumed = spec("--resume", "--name", "s", "--image-every", "2").resumed(started.kept())
    assert (resumed.num_samples, resumed.scheduler, resumed.seed) == (5, "fifo", 3)
    assert resumed.base.train.seed == 3  # what the trials train with, not the default 0
    assert resumed.image_every == 2  # not kept: a trial reads it from the new driver
    same = spec("--resume", "--name", "s", "--seed", "3").resumed(started.kept())
    assert same.seed == 3
    with pytest.raises(SpecError, match="--seed: got 4, but sweep s was started with 3"):
        spec("--resume", "--name", "s", "--seed", "4").resumed(started.kept())
    changed = {**SPACE, "kl_weight": tune.loguniform(0.1, 1.0)}
    with pytest.raises(SpecError, match="search space 'kl_weight': loguniform.0.1, 1., but"):
        spec("--resume", "--name", "s", space=changed).resumed(started.kept())
    assert spec("--resume", "--name", "s").resumed({}).num_samples == 16  # nothing recorded
