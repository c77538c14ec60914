"""What a sweep is asked to do: `SweepSpec`, built once from the script's search space, base
config and defaults and the command line, checked as it is built, never changed afterwards.

A bad flag or space key fails here, naming it, with what would be accepted, before any data is
read, Ray started or MLflow touched. On `--resume` the spec takes what the sweep was started
with for every flag the command line leaves out (`resumed`); a flag it gives that the restored
state cannot honour is refused by name.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from sweeps import comparable, tracking
from sweeps import space as spaces
from vae_core import Config, ConfigError
from vae_core.data.sources import resolve_data_root

METRIC = "val_bpd"  # the default selection metric; the training loss never picks a winner
RATE, DISTORTION = "val_kl", "val_mse"  # the two objectives of --objective rate-distortion
OBJECTIVES = ("val_bpd", "val_bpd_calibrated", "val_mig", "rate-distortion")
MAXIMISED = {"val_mig"}  # every other metric is minimised

# Defaults of every sweep; a script's `defaults` and then --smoke-test override them, and the
# command line overrides all three.
DEFAULTS: dict[str, Any] = {
    "num_samples": 16,
    "max_epochs": 10,
    "grace_period": 1,
    "image_every": 5,
    "gpus_per_trial": None,  # decided from the cluster (sweeps.cluster)
    "cpus_per_trial": 1.0,
    "max_concurrent": None,
    "time_budget": None,
    "epoch_budget": None,
    # random + ASHA: on 512 recorded learning curves, 20 seeds, TPE + ASHA did no better
    # (docs/BENCHMARKS.md, "Search replay"); TPE for --warm-start, which needs a model
    "search": "random",
    "scheduler": "asha",  # fifo for --objective rate-distortion
    "objective": "val_bpd",
    "pick": None,
    "storage_path": "ray_results",
    "seed": 0,
    "fresh_workers": False,
    "smoke_test": False,
    "resume": False,
    "dry_run": False,
    "epoch_seconds": None,  # --dry-run's estimate: seconds of one epoch of one trial
    "price_per_hour": None,  # --dry-run's estimate: the cluster's price per hour
    "warm_start": None,  # an earlier sweep whose trials TPE starts from
}
SMOKE = {"num_samples": 2, "max_epochs": 2, "image_every": 1}
SMOKE_DATA = {"limit": 256, "iwae_samples": 4}  # 256 images, a cheap importance bound

# What Tune pickles when a sweep starts (searcher, scheduler, stopper, trial count): a resumed
# sweep keeps these, and a command line that changes one is refused, naming it.
KEPT_ON_RESUME = (
    "num_samples",
    "max_epochs",
    "grace_period",
    "search",
    "scheduler",
    "objective",
    "seed",
    "max_concurrent",
    "time_budget",
    "epoch_budget",
    "fresh_workers",
    "smoke_test",
    "warm_start",
)

# Fields of the base config a resumed sweep may change: where the data and the node cache are
# (made absolute from the cwd and $VAE_DATA_ROOT / $VAE_CACHE_DIR, which a resume from another
# shell changes), whether a missing dataset may be fetched, and the device a trial runs on (as
# --gpus-per-trial, which a resume may change too). None changes what a trial computes. Every
# other field is recorded with the kept flags and must match; train.seed is --seed's (kept).
NOT_KEPT_IN_BASE = frozenset(
    {"data.data_root", "data.data_path", "data.cache_dir", "data.download", "train.device"}
)
SEED_RULE = "the sweep seeds trial i with --seed + i"

# flag -> lowest accepted value
LOWEST = {
    "num_samples": 1,
    "max_epochs": 1,
    "grace_period": 1,
    "image_every": 1,
    "max_concurrent": 1,
    "epoch_budget": 1,
}


class SpecError(ValueError):
    """A flag or search-space entry that cannot work; the message names it."""


@dataclass(frozen=True)
class SweepSpec:
    space: Mapping[str, Any]  # config field -> tune domain or constant
    base: Config  # the script's base config, flags applied, every path absolute
    name: str
    num_samples: int
    max_epochs: int  # epochs of a trial that ASHA never stops
    grace_period: int  # epochs before ASHA may stop a trial
    image_every: int  # image grids every N epochs and at the end
    gpus_per_trial: float | None  # None: 1 on a cluster with GPUs, else 0
    cpus_per_trial: float
    max_concurrent: int | None
    time_budget: float | None  # seconds
    epoch_budget: int | None  # epochs of all trials together
    search: str  # tpe | random
    scheduler: str  # asha | fifo
    objective: str  # one of OBJECTIVES
    pick: str | None  # rate-distortion's champion: max-rate=R, else the best val_bpd
    storage_path: str  # absolute path or URI
    tracking_uri: str  # absolute
    experiment: str
    registry_name: str
    seed: int
    resume: bool
    fresh_workers: bool
    smoke_test: bool
    dry_run: bool = False  # print the plan (sweeps.plan), start nothing
    epoch_seconds: float | None = None
    price_per_hour: float | None = None
    warm_start: str | None = None  # an earlier sweep's name (in the same --storage-path)
    command: str = ""  # the command line, as typed
    given: frozenset[str] = frozenset()  # the flags the command line set

    def __post_init__(self) -> None:
        for flag, low in LOWEST.items():
            value = getattr(self, flag)
            if value is not None and value < low:
                raise SpecError(f"--{_flag(flag)}: got {value}; expected >= {low}")
        # nan passes a `value <= 0` check, and inf is no number of CPUs, seconds or price
        # (Ray would fail every trial, or wait forever): both refused, by name.
        if not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise SpecError(
                f"--cpus-per-trial: got {self.cpus_per_trial}; expected > 0, a finite number"
            )
        if (gpus := self.gpus_per_trial) is not None and not _placeable_gpus(gpus):
            raise SpecError(
                f"--gpus-per-trial: got {gpus}; expected >= 0: a fraction < 1 (0.25 packs four "
                "trials on a GPU) or a whole number of GPUs (Ray places no 1.5)"
            )
        for flag in ("epoch_seconds", "price_per_hour"):
            value = getattr(self, flag)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise SpecError(f"--{_flag(flag)}: got {value}; expected a finite number >= 0")
        budget = self.time_budget
        if budget is not None and not (math.isfinite(budget) and budget > 0):
            raise SpecError(
                f"--time-budget: got {budget}; expected seconds > 0, a finite number (leave it "
                "out for no time limit)"
            )
        self._check_objective()
        if self.warm_start is not None and self.search != "tpe":
            raise SpecError(
                f"--warm-start {self.warm_start}: tells an earlier sweep's trials to TPE, and "
                "--search random has no model to tell them to; leave --search out (tpe)"
            )
        if self.warm_start is not None and self.warm_start == self.name:
            raise SpecError(
                f"--warm-start {self.warm_start}: the sweep's own name; to go on with that "
                "sweep, pass --resume instead"
            )
        spaces.check_space(dict(self.space), self.base)
        comparable.check_one_key(dict(self.space), self.base)
        spaces.check_search(dict(self.space), self.search)

    def _check_objective(self) -> None:
        if self.objective not in OBJECTIVES:
            raise SpecError(f"--objective: got {self.objective!r}; expected one of {OBJECTIVES}")
        if self.objective == "val_bpd_calibrated" and comparable.family(self.base) != "continuous":
            raise SpecError(
                "--objective val_bpd_calibrated: calibrates a Gaussian decoder's sigma, and this "
                f"sweep's likelihood is {self.base.model.likelihood}; use --objective val_bpd"
            )
        if self.objective == "val_mig" and self.base.data.dataset != "shapes":
            raise SpecError(
                "--objective val_mig: scores the code against the data's known generative "
                f"factors, which only shapes has, not {self.base.data.dataset}; use val_bpd"
            )
        if self.multi_objective and self.scheduler == "asha":
            raise SpecError(
                "--scheduler asha: ASHA stops trials on one metric, and --objective "
                "rate-distortion has two; leave --scheduler out (fifo)"
            )
        if self.pick is not None:
            if not self.multi_objective:
                raise SpecError(
                    f"--pick {self.pick}: picks a member of a Pareto front; it needs "
                    "--objective rate-distortion"
                )
            self.max_rate  # noqa: B018 - parses, or names the flag

    @property
    def multi_objective(self) -> bool:
        return self.objective == "rate-distortion"

    @property
    def metric(self) -> str:
        """What picks one model: the best trial, and the registry's champion."""
        return METRIC if self.multi_objective else self.objective

    @property
    def mode(self) -> str:
        """min, or max for a score (val_mig)."""
        return "max" if self.metric in MAXIMISED else "min"

    @property
    def searched(self) -> list[str]:
        """What the searcher optimises: the metric, or rate and distortion."""
        return [RATE, DISTORTION] if self.multi_objective else [self.metric]

    @property
    def modes(self) -> list[str]:
        """min or max, for each of `searched`."""
        return ["min", "min"] if self.multi_objective else [self.mode]

    @property
    def max_rate(self) -> float | None:
        """--pick max-rate=R: R nats per image."""
        if self.pick is None:
            return None
        name, _, value = self.pick.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = math.nan
        if name != "max-rate" or not rate >= 0:
            raise SpecError(
                f"--pick: got {self.pick!r}; expected max-rate=R, R >= 0 in nats per image "
                "(the member of lowest distortion whose val_kl <= R)"
            )
        return rate

    @property
    def dataset(self) -> str:
        return self.base.data.dataset

    @property
    def experiment_path(self) -> str:
        """Where Tune keeps this sweep's state and trials."""
        return self.on_storage(self.name)

    def on_storage(self, *parts: str) -> str:
        """A path under --storage-path, its URI's query (`?region=...`) kept at the end."""
        base, mark, query = self.storage_path.partition("?")
        return "/".join([base.rstrip("/"), *parts]) + mark + query

    @property
    def budgeted(self) -> bool:
        """A budget may end the sweep before num_samples trials ran."""
        return self.time_budget is not None or self.epoch_budget is not None

    def kept(self) -> dict[str, Any]:
        """What a resumed sweep keeps: recorded on the sweep's parent run when it starts, as
        JSON in one tag. The base goes in flat (`train.lr`) without its locations: about
        1,000 characters, well under MLflow's 8,000 per tag value (tests/test_spec.py)."""
        return {
            **{flag: getattr(self, flag) for flag in KEPT_ON_RESUME},
            "space": spaces.describe_space(dict(self.space)),
            "base": _kept_base(self.base),
        }

    def resumed(self, recorded: Mapping[str, Any]) -> SweepSpec:
        """This spec continuing a sweep started with `recorded` (its `kept()`): flags left out
        take their recorded values; a flag given with another value is refused."""
        changes = {}
        for flag in KEPT_ON_RESUME:
            if flag not in recorded:
                continue  # a sweep started before this flag was recorded
            was, now = recorded[flag], getattr(self, flag)
            if flag not in self.given:
                changes[flag] = was
            elif now != was:
                raise SpecError(
                    f"--{_flag(flag)}: got {_shown(now)}, but sweep {self.name} was started "
                    f"with {_shown(was)}; a resumed sweep keeps it (Tune saved its searcher, "
                    "scheduler and stopper with it): leave the flag out, or start a new sweep"
                )
        if "space" in recorded:  # else a sweep started before its space was recorded
            self._check_space(recorded["space"])
        if "smoke_test" in changes and changes["smoke_test"] != self.smoke_test:
            raise SpecError(
                f"--smoke-test: sweep {self.name} was started "
                f"{'with' if changes['smoke_test'] else 'without'} it; pass the same"
            )
        if "base" in recorded:  # else a sweep started before its base was recorded
            self._check_base(recorded["base"])
        if "seed" in changes:  # the base config carries the seed to every trial
            changes["base"] = self.base.replace(seed=changes["seed"])
        return dataclasses.replace(self, **changes)

    def _check_space(self, recorded: Mapping[str, str]) -> None:
        """The space described as the sweep started with it: no key changed, removed or new
        (Tune's searcher would meet a key it never saw, after the parent run reopened)."""
        described = spaces.describe_space(dict(self.space))
        for key, was in recorded.items():
            if (now := described.get(key)) != was:
                raise SpecError(
                    f"search space '{key}': {now or 'removed'}, but sweep {self.name} was "
                    f"started with {was}; a resumed sweep searches the space it started with"
                )
        if new := [key for key in described if key not in recorded]:
            raise SpecError(
                f"search space '{new[0]}': {described[new[0]]}, but sweep {self.name} was "
                "started without it; a resumed sweep searches the space it started with: "
                "remove it, or start a new sweep"
            )

    def _check_base(self, recorded: Mapping[str, Any]) -> None:
        """The base config the sweep started with, but for its locations: the trials after
        the resume would train otherwise than those before, under the same parent params."""
        now = _kept_base(self.base)
        for key, was in recorded.items():
            if key in now and now[key] != was:  # a field newer or older than the record: skip
                name = key.partition(".")[2]
                raise SpecError(
                    f"base config {key}: got {_shown(now[key])}, but sweep {self.name} was "
                    f"started with {_shown(was)}, which its trials so far and its run's "
                    f"base.{key} param hold; a resumed sweep keeps its base config: leave "
                    f"--set {name} out (and the script's base config as it was), or start a "
                    "new sweep"
                )


def _kept_base(base: Config) -> dict[str, Any]:
    """The base config's fields a resumed sweep keeps: JSON-ready (lists, not tuples)."""
    return {
        key: value
        for key, value in base.flat().items()
        if key not in NOT_KEPT_IN_BASE and key != "train.seed"
    }


def _placeable_gpus(gpus: float) -> bool:
    """A share of one GPU, or whole GPUs: Ray places nothing in between."""
    return math.isfinite(gpus) and (0 <= gpus < 1 or (gpus >= 1 and float(gpus).is_integer()))


def _flag(field: str) -> str:
    return field.replace("_", "-")


def _shown(value: Any) -> str:
    return "not set" if value is None else repr(value) if isinstance(value, str) else f"{value}"


# (flag, argparse options, help); {name} in a help text is that flag's default.
FLAGS: list[tuple[str, dict[str, Any], str]] = [
    ("--num-samples", {"type": int}, "trials to run (default {num_samples}; 2 with --smoke-test)"),
    (
        "--max-epochs",
        {"type": int},
        "epochs of a trial that ASHA never stops (default {max_epochs}; 2 with --smoke-test)",
    ),
    (
        "--gpus-per-trial",
        {"type": float},
        "GPUs per trial; 0.25 packs four trials on a GPU (default: 1 when the cluster has "
        "GPUs, else 0)",
    ),
    (
        "--cpus-per-trial",
        {"type": float},
        "CPUs per trial, also its torch threads (default {cpus_per_trial:g})",
    ),
    (
        "--max-concurrent",
        {"type": int},
        "trials running at once (default: as many as resources allow)",
    ),
    (
        "--time-budget",
        {"type": float, "metavar": "SECONDS"},
        "stop starting and running trials after this long",
    ),
    (
        "--epoch-budget",
        {"type": int, "metavar": "EPOCHS"},
        "stop the sweep once its trials have trained this many epochs in all, counted across "
        "--resume (a compute budget, e.g. to compare searches on equal terms); the trials "
        "running then stop too",
    ),
    (
        "--grace-period",
        {"type": int},
        "epochs before ASHA may stop a trial (default {grace_period})",
    ),
    (
        "--search",
        {"choices": ("tpe", "random")},
        "random: Tune samples the space at random (tune.grid_search entries are walked in "
        "full, num-samples times; the default: with ASHA it did as well as TPE, see "
        "docs/BENCHMARKS.md); tpe: Optuna's TPE proposes each trial from the results so far "
        "(the default of --warm-start)",
    ),
    (
        "--scheduler",
        {"choices": ("asha", "fifo")},
        "asha: stop unpromising trials early (default); fifo: every trial runs --max-epochs "
        "(the default of --objective rate-distortion)",
    ),
    (
        "--objective",
        {"choices": OBJECTIVES},
        "what the search minimises: val_bpd (default), val_bpd_calibrated (the bound at the "
        "decoder's best sigma: judges what a trial learned, not its sigma_x; Gaussian "
        "decoders), val_mig (maximised: the mutual information gap of the code and the data's "
        "generative factors; shapes), or rate-distortion: val_kl and val_mse together "
        "(Optuna's multi-objective TPE, FIFO), whose Pareto front is registered",
    ),
    (
        "--pick",
        {"metavar": "max-rate=R"},
        "rate-distortion: the champion is the front's member of lowest distortion with "
        "val_kl <= R nats (default: its best val_bpd)",
    ),
    (
        "--image-every",
        {"type": int},
        "log image grids every N epochs and at the end (default {image_every}; 1 with "
        "--smoke-test)",
    ),
    ("--data-root", {}, "where the dataset is (default $VAE_DATA_ROOT, ./data)"),
    (
        "--download",
        {"action": "store_true"},
        "fetch MNIST / Fashion-MNIST into --data-root if it is not there, on every node before "
        "the trials start (CelebA cannot be fetched: see README)",
    ),
    ("--data-path", {}, "a `vae-data prepare` file, path or s3:// URI"),
    (
        "--tracking-uri",
        {},
        "MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)",
    ),
    ("--experiment", {}, "MLflow experiment (default vae-sweep/<dataset>)"),
    (
        "--registry-name",
        {},
        "registered model name (default from the data and likelihood family: <dataset>-vae "
        "for the dataset's defaults, else e.g. celeba128-tight-vae, mnist-binary-vae; -smoke "
        "appended with --smoke-test)",
    ),
    (
        "--storage-path",
        {},
        "where Tune keeps trials and checkpoints: a path, or s3://... shared by all nodes of a "
        "cluster (default ./{storage_path})",
    ),
    ("--name", {}, "sweep name (default <dataset>-<date>-<time>)"),
    (
        "--resume",
        {"action": "store_true"},
        "continue the sweep --name from --storage-path after an interruption, with the flags "
        "it was started with",
    ),
    (
        "--warm-start",
        {"metavar": "SWEEP"},
        "start TPE from the finished and early-stopped trials of the earlier sweep SWEEP (its "
        "--name, in the same --storage-path), e.g. when widening its space: trials the new "
        "space holds are told to TPE before it proposes, and none is trained again",
    ),
    (
        "--seed",
        {"type": int},
        "seeds Optuna; trial i trains with seed + i, recorded as its train.seed (default {seed})",
    ),
    (
        "--fresh-workers",
        {"action": "store_true"},
        "start every trial in a new worker process (slower: each imports torch again) instead "
        "of reusing the worker of a finished trial",
    ),
    (
        "--smoke-test",
        {"action": "store_true"},
        "2 trials x 2 epochs on 256 images: checks the set-up in a minute",
    ),
    (
        "--set",
        {"action": "append", "metavar": "KEY=VALUE", "dest": "overrides"},
        "change a field of the script's base config, e.g. --set lr=3e-4 --set batch_size=128 "
        "(repeatable; the fields of vae-train --help)",
    ),
    (
        "--space",
        {"metavar": "FILE.yaml"},
        "search this space instead of the script's: one line per config field, a domain as "
        "the sweep's run logs it (latent_dim: choice([16, 32]), kl_weight: loguniform(0.25, "
        "4)) or a constant",
    ),
    (
        "--dry-run",
        {"action": "store_true"},
        "print the trials, their resources and the sweep's expected epochs (and time and "
        "cost with --epoch-seconds / --price-per-hour), then stop: nothing starts",
    ),
    (
        "--epoch-seconds",
        {"type": float, "metavar": "SECONDS"},
        "--dry-run: seconds of one epoch of one trial (a trial's epoch_seconds in MLflow)",
    ),
    (
        "--price-per-hour",
        {"type": float, "metavar": "PRICE"},
        "--dry-run: what the cluster costs per hour, all its nodes",
    ),
]


def build_parser(
    description: str,
    defaults: Mapping[str, Any],
    add_flags: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """The sweep's flags, and the script's own (`add_flags`). Every default is None here, so
    that the spec can tell what was typed; the real defaults are shown in the help."""
    d = {**DEFAULTS, **defaults}
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for flag, options, text in FLAGS:
        parser.add_argument(flag, default=None, help=text.format(**d), **options)
    if add_flags is not None:
        add_flags(parser)
    return parser


def parse_spec(
    space: Mapping[str, Any],
    base_config: Mapping[str, Any] | Callable[[argparse.Namespace], Mapping[str, Any]],
    argv: list[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> SweepSpec:
    """Parse `argv` (default sys.argv[1:]) with `parser` (default: the sweep's flags) into a
    checked spec. argparse exits on a flag it cannot parse; a SpecError or ConfigError names
    any other problem."""
    parser = parser or build_parser("", defaults or {})
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    command = shlex.join([parser.prog, *argv])
    return spec_from_args(args, space, base_config, defaults or {}, command)


def spec_from_args(
    args: argparse.Namespace,
    space: Mapping[str, Any],
    base_config: Mapping[str, Any] | Callable[[argparse.Namespace], Mapping[str, Any]],
    defaults: Mapping[str, Any],
    command: str = "",
) -> SweepSpec:
    """The spec of parsed flags: typed values over --smoke-test's over the script's defaults
    over DEFAULTS. `base_config` may depend on the script's own flags (a callable)."""
    typed = {k: v for k, v in vars(args).items() if v is not None}
    overrides = parse_overrides(typed.pop("overrides", []))
    if typed.get("space"):
        space = spaces.load_space(typed.pop("space"))
    if "seed" in overrides:  # else --seed (default 0) would replace it, silently
        seed = overrides["seed"]
        raise SpecError(f"--set seed={seed}: {SEED_RULE}; pass --seed {seed} instead")
    if "seed" in space and "seed" not in spaces.sampled_keys(dict(space)):
        seed = space["seed"]  # a constant: every trial the same seed, not --seed + i
        raise SpecError(
            f"search space 'seed' = {seed!r}: one seed for every trial, where {SEED_RULE}; "
            f"pass --seed {seed!r} instead (a domain, e.g. tune.randint, samples it)"
        )
    if searched := sorted(set(overrides) & set(space)):
        raise SpecError(
            f"--set {searched[0]}: the search space samples it; remove it from the space "
            "(--space FILE) to fix its value"
        )
    smoke = typed.get("smoke_test", defaults.get("smoke_test", False))
    v = {**DEFAULTS, **defaults, **(SMOKE if smoke else {}), **typed}
    if v["objective"] == "rate-distortion" and "scheduler" not in typed:
        v["scheduler"] = "fifo"  # ASHA ranks on one metric
    if v["warm_start"] is not None and "search" not in typed:
        v["search"] = "tpe"  # the earlier trials are told to TPE's model
    if v["resume"] and "name" not in typed:
        raise SpecError("--resume needs --name: the sweep to continue")
    base = _resolve_base(base_config(args) if callable(base_config) else base_config, v, overrides)
    storage = v["storage_path"]
    return SweepSpec(
        **{k: v[k] for k in DEFAULTS if k != "storage_path"},
        space=MappingProxyType(dict(space)),  # read-only, as the rest of the spec
        base=base,
        name=v.get("name") or f"{base.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}",
        storage_path=storage if "://" in storage else str(Path(storage).resolve()),
        tracking_uri=tracking.absolute_tracking_uri(
            v.get("tracking_uri") or tracking.default_tracking_uri()
        ),
        experiment=v.get("experiment") or f"vae-sweep/{base.data.dataset}",
        registry_name=comparable.registry_name(base, v.get("registry_name"), smoke),
        command=command,
        given=frozenset(typed),
    )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE, each value read as YAML (3e-4, 128, true, [32, 64], text)."""
    overrides = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=3e-4")
        try:
            overrides[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            overrides[key.strip()] = text
    return overrides


def _resolve_base(
    base_config: Mapping[str, Any], v: dict[str, Any], overrides: Mapping[str, Any]
) -> Config:
    """The base config with --set and the flags applied and every path absolute (Tune moves
    the cwd)."""
    config = Config.from_dict(dict(base_config))
    # A script's base config that sets a seed is refused, not honoured when --seed is left
    # out: one place states the sweep's seed (--seed, or the script's `defaults`), and a
    # --seed typed later would otherwise replace it silently.
    if (seed := config.train.seed) != Config().train.seed:
        raise SpecError(
            f"the script's base config: seed {seed}, but {SEED_RULE} (--seed {v['seed']} "
            f"here), which would replace it; give the script's defaults {{'seed': {seed}}} "
            f"instead, or pass --seed {seed}"
        )
    for key, value in overrides.items():
        try:
            config = config.replace(**{key: value})
        except ConfigError as err:
            raise SpecError(f"--set {key}={value}: {err}") from None
    changes: dict[str, Any] = {"seed": v["seed"]}
    d = config.data
    if d.dataset != "shapes":
        changes["data_root"] = str(resolve_data_root(v.get("data_root") or d.data_root))
    if v.get("download"):
        changes["download"] = True
    data_path = v.get("data_path") or d.data_path
    if data_path:
        changes["data_path"] = data_path if "://" in data_path else str(Path(data_path).resolve())
    if d.cache_dir:
        changes["cache_dir"] = str(Path(d.cache_dir).resolve())
    if v["smoke_test"]:
        changes.update(SMOKE_DATA)
    return config.replace(**changes)
