"""SweepSpec: built once from the script's space, base config, defaults and the command line;
frozen; on --resume it keeps what the sweep was started with. And readable search spaces."""

import dataclasses
import json

import pytest
from ray import tune

from sweeps import celeba, mnist, shapes
from sweeps.engine import run_sweep
from sweeps.plan import expected_epochs, plan
from sweeps.space import describe, describe_space, sampled_keys, trial_name
from sweeps.spec import KEPT_ON_RESUME, SpecError, parse_spec
from sweeps.tracking import default_tracking_uri, uri_flag

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


def test_a_trial_is_named_by_its_index_and_sampled_values():
    space = {
        "latent_dim": tune.choice([16, 32]),
        "kl_weight": tune.loguniform(0.25, 4.0),
        "sigma_x": tune.loguniform(0.03, 0.3),
        "likelihood": tune.choice(["gaussian", "gaussian_learned"]),
        "lr": tune.grid_search([1e-3, 3e-4]),
        "arch": "conv",  # a constant: the same for every trial, not in the name
    }
    keys = sampled_keys(space)
    assert keys == ["latent_dim", "kl_weight", "sigma_x", "likelihood", "lr"]
    values = {"latent_dim": 16, "kl_weight": 0.40123, "sigma_x": 0.1234, "lr": 3e-4,
              "likelihood": "gaussian_learned", "arch": "conv", "trial_index": 7}  # fmt: skip
    assert trial_name(7, values, keys) == "07 z16 beta0.401 sigma0.123 learned lr0.0003"
    assert trial_name(7, {**values, "likelihood": "gaussian"}, keys, width=3).startswith("007 z16")
    assert trial_name(12, {}, keys) == "12"  # nothing sampled known: the index alone


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


# A value other than the default for each kept flag (the sweep below starts with the defaults).
CHANGED = {
    "num_samples": ["--num-samples", "5"],
    "max_epochs": ["--max-epochs", "3"],
    "grace_period": ["--grace-period", "2"],
    "search": ["--search", "tpe"],
    "scheduler": ["--scheduler", "fifo"],
    "objective": ["--objective", "val_mig"],
    "seed": ["--seed", "4"],
    "max_concurrent": ["--max-concurrent", "2"],
    "time_budget": ["--time-budget", "60"],
    "epoch_budget": ["--epoch-budget", "10"],
    "fresh_workers": ["--fresh-workers"],
    "smoke_test": ["--smoke-test"],
    "warm_start": ["--warm-start", "earlier"],
}


@pytest.mark.parametrize("flag", KEPT_ON_RESUME)
def test_every_kept_flag_changed_on_resume_is_refused_by_name(flag):
    kept = json.loads(json.dumps(spec("--name", "s").kept()))  # as the parent run's tag holds it
    option = "--" + flag.replace("_", "-")
    with pytest.raises(SpecError, match=f"^{option}: got .*, but sweep s was started with "):
        spec("--resume", "--name", "s", *CHANGED[flag]).resumed(kept)


def test_a_resume_keeps_the_base_config_but_for_its_locations(tmp_path):
    started = spec("--name", "s", "--set", "widths=[16, 32, 64, 64]", "--set", "lr=3e-4")
    kept = json.loads(json.dumps(started.kept()))  # as the parent run's tag holds it
    same = ("--resume", "--name", "s", "--set", "widths=[16, 32, 64, 64]", "--set", "lr=3e-4")
    assert spec(*same).resumed(kept).base.model.widths == (16, 32, 64, 64)  # lists read back
    data = tmp_path / "d.arrow"
    places = ["--data-root", tmp_path, "--data-path", data, "--download", "--set", "device=cpu"]
    moved = spec(*same, *map(str, places), "--set", f"cache_dir={tmp_path}").resumed(kept)
    assert (moved.base.data.data_path, moved.base.train.device) == (str(data), "cpu")
    with pytest.raises(
        SpecError,
        match=r"^base config train\.batch_size: got 64, but sweep s was started with 128, .*"
        r"leave --set batch_size out \(and the script's base config as it was\), or start a new",
    ):
        spec(*same, "--set", "batch_size=64").resumed(kept)
    with pytest.raises(SpecError, match="^base config train.lr: got 0.001, but .* with 0.0003"):
        spec("--resume", "--name", "s", "--set", "widths=[16, 32, 64, 64]").resumed(kept)
    with pytest.raises(SpecError, match="^base config model.widths: got not set, but .* with "):
        spec("--resume", "--name", "s", "--set", "lr=3e-4").resumed(kept)
    wider = {**SPACE, "lr": tune.loguniform(1e-4, 1e-2)}
    with pytest.raises(
        SpecError,
        match=r"^search space 'lr': loguniform\(0.0001, 0.01\), but sweep s was started "
        "without it; a resumed sweep searches the space it started with",
    ):
        spec(*same[:-2], space=wider).resumed(kept)
    # A sweep recorded before its base (and space) were: resumed as before, unchecked.
    older = {k: v for k, v in kept.items() if k not in ("base", "space")}
    assert spec("--resume", "--name", "s", space=wider).resumed(older).base.train.lr == 1e-3


@pytest.mark.parametrize(
    ("space", "base", "flags"),
    [
        (shapes.SEARCH_SPACE, shapes.BASE_CONFIG, []),
        (mnist.SEARCH_SPACE, mnist.BASE_CONFIG, []),
        (celeba.SEARCH_SPACE, celeba.BASE_128, []),
        (celeba.SEARCH_SPACE, celeba.BASE_64, ["--data-path", "s3://bucket/" + "x" * 500]),
    ],
)
def test_what_a_resume_keeps_fits_an_mlflow_tag(space, base, flags):
    """MLflow keeps at most 8,000 characters of a tag value; the kept flags are one tag."""
    kept = parse_spec(space, base, ["--tracking-uri", "sqlite:///x.db", *flags]).kept()
    assert 500 < len(json.dumps(kept)) < 2000
    assert "model.arch" in kept["base"] and "data.data_path" not in kept["base"]


def test_the_seed_is_set_by_seed_alone(tmp_path):
    """Trial i trains with --seed + i: a seed set anywhere else would be replaced, silently."""
    assert [spec("--seed", "5").base.train.seed, spec().base.train.seed] == [5, 0]
    with pytest.raises(
        SpecError,
        match=r"^--set seed=5: the sweep seeds trial i with --seed \+ i; pass --seed 5 instead",
    ):
        spec("--set", "seed=5")
    path = tmp_path / "space.yaml"
    path.write_text("latent_dim: choice([4, 8])\nseed: 5\n")
    with pytest.raises(SpecError, match=r"^search space 'seed' = 5: one seed for every trial, "):
        spec("--space", str(path))
    path.write_text("latent_dim: choice([4, 8])\nseed: randint(0, 100)\n")
    assert "seed" in sampled_keys(dict(spec("--space", str(path)).space))  # sampled: its own
    seeded = {**BASE, "seed": 5}  # a script's base config: refused, not honoured
    for flags in ([], ["--seed", "5"]):
        with pytest.raises(
            SpecError,
            match=r"^the script's base config: seed 5, but the sweep seeds trial i with --seed "
            rf"\+ i \(--seed {flags[-1] if flags else 0} here\), which would replace it; give "
            r"the script's defaults "
            r"\{'seed': 5\} instead, or pass --seed 5",
        ):
            parse_spec(SPACE, seeded, ["--tracking-uri", "sqlite:///x.db", *flags])
    assert parse_spec(SPACE, BASE, [], {"seed": 5}).base.train.seed == 5  # the defaults' way


@pytest.mark.parametrize(
    ("flag", "value", "accepted"),
    [
        ("--time-budget", "nan", "expected seconds > 0, a finite number"),
        ("--time-budget", "inf", "expected seconds > 0, a finite number"),
        ("--time-budget", "0", "expected seconds > 0, a finite number"),
        ("--cpus-per-trial", "nan", "expected > 0, a finite number"),
        ("--cpus-per-trial", "inf", "expected > 0, a finite number"),
        ("--gpus-per-trial", "1.5", "expected >= 0: a fraction < 1 .0.25 packs"),
        ("--gpus-per-trial", "nan", "expected >= 0: a fraction < 1 .0.25 packs"),
        ("--gpus-per-trial", "inf", "expected >= 0: a fraction < 1 .0.25 packs"),
        ("--gpus-per-trial", "-0.5", "expected >= 0: a fraction < 1 .0.25 packs"),
        ("--epoch-seconds", "inf", "expected a finite number >= 0"),
        ("--epoch-seconds", "nan", "expected a finite number >= 0"),
        ("--price-per-hour", "inf", "expected a finite number >= 0"),
    ],
)
def test_a_number_flag_that_cannot_work_is_refused(flag, value, accepted):
    with pytest.raises(SpecError, match=f"^{flag}: got {float(value)}; {accepted}"):
        spec(flag, value)


@pytest.mark.parametrize("gpus", ["0", "0.25", "0.5", "1", "2"])
def test_a_share_of_a_gpu_or_whole_gpus_are_accepted(gpus):
    assert spec("--gpus-per-trial", gpus).gpus_per_trial == float(gpus)


def test_set_changes_the_base_config_and_names_a_bad_field():
    s = spec("--set", "lr=3e-4", "--set", "batch_size=128", "--set", "widths=[16, 32, 64, 64]")
    assert (s.base.train.lr, s.base.train.batch_size) == (3e-4, 128)
    assert s.base.model.widths == (16, 32, 64, 64)
    with pytest.raises(SpecError, match="--set bogus=1: bogus: unknown field in the config"):
        spec("--set", "bogus=1")
    with pytest.raises(SpecError, match="--set latent_dim: the search space samples it"):
        spec("--set", "latent_dim=8")
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        spec("--set", "lr")
    with pytest.raises(SpecError, match="--set batch_size=-1: "):
        spec("--set", "batch_size=-1")


def test_space_file_replaces_the_script_s_space_in_the_logged_notation(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "latent_dim: choice([16, 32])\n"
        "kl_weight: loguniform(0.25, 4)\n"
        "likelihood: choice(['gaussian', 'gaussian_learned'])\n"
        "lr: 0.0005\n"
    )
    s = spec("--space", str(path))
    assert describe_space(dict(s.space)) == {
        "latent_dim": "choice([16, 32])",
        "kl_weight": "loguniform(0.25, 4)",
        "likelihood": "choice(['gaussian', 'gaussian_learned'])",
        "lr": "0.0005",
    }  # what the parent run logs reads back as it was written
    path.write_text("kl_weight: logunifrom(0.25, 4)\n")
    with pytest.raises(ValueError, match="'kl_weight': .*unknown domain 'logunifrom'"):
        spec("--space", str(path))
    path.write_text("kl_weight: loguniform(0.25)\n")
    with pytest.raises(ValueError, match="loguniform takes the arguments of tune.loguniform"):
        spec("--space", str(path))
    path.write_text("latent_dim: choice([0, 8])\n")  # checked against the config, as a script's
    with pytest.raises(Exception, match="search space 'latent_dim' = 0"):
        spec("--space", str(path))
    with pytest.raises(FileNotFoundError, match="--space .*: no such file"):
        spec("--space", str(tmp_path / "none.yaml"))


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path, capsys):
    s = spec("--dry-run", "--epoch-seconds", "20", "--price-per-hour", "3", "--num-samples", "27",
             "--max-epochs", "27", "--grace-period", "1", "--max-concurrent", "2")  # fmt: skip
    assert s.dry_run and run_sweep(s) is None
    out = capsys.readouterr().out
    assert "27: drawn at random by Tune" in out
    tpe = plan(spec("--dry-run", "--num-samples", "27", "--search", "tpe"))
    assert "27: Optuna's TPE: the first 10 at random, then proposed from results" in tpe
    assert "ASHA may stop it after epoch 1, 3, 9" in out
    e = 1 + 2 / 3 + 6 / 9 + 18 / 27  # 1/3 of the trials go on at each rung
    assert expected_epochs(27, 1, "asha") == pytest.approx(e)
    assert f"about {27 * e:.0f} in all ({e:.1f} per trial" in out
    hours = 27 * e * 20 / 2 / 3600
    assert f"time         about {hours * 60:.0f} min with 2 trials at once" in out
    assert f"cost about {hours * 3:.2f} at 3/h" in out
    assert not (tmp_path / "x.db").exists() and not list(tmp_path.iterdir())


def test_a_small_sweep_takes_at_least_one_whole_trial(capsys):
    """The quick start's shape: 4 trials, rungs at 2 and 6 of 16. A third of 4 trials past 6 is
    less than one, but the first there always goes on (the measured run trained 26 epochs)."""
    s = spec("--dry-run", "--epoch-seconds", "34", "--num-samples", "4", "--max-epochs", "16",
             "--grace-period", "2", "--cpus-per-trial", "1", "--max-concurrent", "2")  # fmt: skip
    run_sweep(s)
    out = capsys.readouterr().out
    e = (4 * 2 + 4 / 3 * 4 + 1 * 10) / 4  # 4 trials to 2, 4/3 to 6, 1 (not 4/9) to 16
    assert expected_epochs(16, 2, "asha", trials=4) == pytest.approx(e)
    assert f"about {4 * e:.0f} in all ({e:.1f} per trial" in out
    assert "time         about 9 min with 2 trials at once" in out  # 16 x 34 s, not 23 x 34 / 2


def test_download_is_a_sweep_flag_that_reaches_every_trial():
    assert spec("--download").base.data.download is True
    assert spec().base.data.download is False


def test_a_printed_command_names_the_tracking_uri_unless_it_is_the_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert uri_flag(default_tracking_uri()) == ""  # ./mlflow.db: what the command reads anyway
    assert uri_flag("http://mlflow:5000") == " --tracking-uri http://mlflow:5000"
