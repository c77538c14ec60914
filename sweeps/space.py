"""A sweep's search space: checked against the base config before anything starts, and
described readably wherever it is logged.

A space maps config fields (flat names, e.g. `latent_dim`) to Ray Tune domains
(`tune.loguniform(0.1, 10)`, `tune.choice([8, 16])`, `tune.grid_search([...])`) or constants.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import yaml
from ray import tune
from ray.tune.search.sample import Categorical, Domain, Float, Function, Integer, Quantized

from vae_core import Config, ConfigError

# Fields the sweep sets on every trial itself; a space that samples them would be overridden.
SET_BY_THE_SWEEP = {"epochs": "--max-epochs (every trial runs up to it; ASHA stops it earlier)"}


def grid_values(domain: Any) -> list | None:
    """The values of a `tune.grid_search` entry, else None."""
    if isinstance(domain, dict) and list(domain) == ["grid_search"]:
        return list(domain["grid_search"])
    return None


def corners(key: str, domain: Any) -> list:
    """The values of `domain` that bound what a trial can get: every choice, both ends."""
    if (values := grid_values(domain)) is not None:
        return values
    if isinstance(domain, str | int | float | bool):
        return [domain]  # a constant
    if not isinstance(domain, Domain):
        raise ValueError(
            f"search space '{key}': expected a tune domain (tune.choice, tune.loguniform, "
            f"tune.grid_search, ...) or a constant, got {domain!r}"
        )
    if isinstance(domain, Categorical):
        return list(domain.categories)
    if isinstance(domain, Integer):
        return [domain.lower, domain.upper - 1]  # Tune's upper bound is exclusive
    if isinstance(domain, Float) and domain.lower > -float("inf"):
        return [domain.lower, domain.upper]
    return []  # a normal distribution or a function: no bounds to check


def check_space(space: dict[str, Any], base: Config) -> None:
    """Build the config at every corner of the space: a bad bound, an unknown field or a field
    the sweep sets itself fails here, naming it, before any trial starts."""
    for key, domain in space.items():
        if key in SET_BY_THE_SWEEP:
            raise ConfigError(
                f"search space '{key}': set by the sweep from {SET_BY_THE_SWEEP[key]}; "
                "remove it from the space"
            )
        for value in corners(key, domain):
            try:
                base.replace(**{key: value})
            except ConfigError as err:
                raise ConfigError(f"search space '{key}' = {value!r}: {err}") from None


def check_search(space: dict[str, Any], search: str) -> None:
    """A grid is walked by Tune's own sampling; TPE cannot propose it."""
    grids = [k for k, v in space.items() if grid_values(v) is not None]
    if grids and search == "tpe":
        raise ValueError(
            f"search space '{grids[0]}': tune.grid_search is walked by --search random, "
            "not proposed by TPE; pass --search random or use tune.choice"
        )


def _number(value: float) -> str:
    return f"{value:g}"


def describe(domain: Any) -> str:
    """`loguniform(0.1, 10)`, `choice([8, 16, 32])`, `grid_search([2, 4])`, or the constant."""
    if (values := grid_values(domain)) is not None:
        return f"grid_search({values!r})"
    if isinstance(domain, Categorical):
        return f"choice({list(domain.categories)!r})"
    if isinstance(domain, Function):
        return "sample_from(function)"
    if not isinstance(domain, Domain):
        return repr(domain)
    sampler = domain.get_sampler()
    q = ""
    if isinstance(sampler, Quantized):
        q, sampler = f", {_number(sampler.q)}", sampler.sampler
    kind = type(sampler).__name__.lstrip("_").lower()  # uniform | loguniform | normal
    if kind == "normal":
        return f"randn({_number(sampler.mean)}, {_number(sampler.sd)}{q})"
    if isinstance(domain, Integer):
        name = {"uniform": "randint", "loguniform": "lograndint"}[kind]
        return f"{'q' if q else ''}{name}({domain.lower}, {domain.upper}{q})"
    return f"{'q' if q else ''}{kind}({_number(domain.lower)}, {_number(domain.upper)}{q})"


def sampled_keys(space: dict[str, Any]) -> list[str]:
    """The keys whose value varies between trials (a domain or a grid), not the constants."""
    return [k for k, v in space.items() if isinstance(v, Domain) or grid_values(v) is not None]


def describe_space(space: dict[str, Any]) -> dict[str, str]:
    """Each key's domain, described: what the parent run logs as `space.<key>` params."""
    return {key: describe(domain) for key, domain in space.items()}


# How a trial's run is named: its index, then its sampled values, short (`07 z16 beta0.4
# sigma0.12 learned`). Unique in a sweep (the index) and sorted by it in the runs table.
SHORT_KEYS = {"latent_dim": "z", "kl_weight": "beta", "sigma_x": "sigma", "batch_size": "bs"}
SHORT_VALUES = {"gaussian_learned": "learned", "gaussian": "fixed", "bernoulli": "bernoulli"}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return SHORT_VALUES.get(value, str(value)) if isinstance(value, str) else str(value)


def trial_name(index: int, values: dict[str, Any], searched: list[str], width: int = 2) -> str:
    """`07 z16 beta0.4 sigma0.12 learned`: the index, zero-padded to `width`, then each of the
    `searched` keys' values (the likelihood by its value alone)."""
    parts = [f"{index:0{width}d}"]
    for key in searched:
        if key not in values:
            continue
        value = _short(values[key])
        parts.append(value if key == "likelihood" else f"{SHORT_KEYS.get(key, key)}{value}")
    return " ".join(parts)


# A search space from a YAML file (--space FILE): each key a config field, each value a domain
# written as the sweep's parent run logs it (`loguniform(0.1, 10)`, `choice([8, 16])`) or a
# constant. What the UI shows can be copied back into a file.
DOMAINS = {
    "uniform": ("tune.uniform", lambda a, b: tune.uniform(a, b)),
    "loguniform": ("tune.loguniform", lambda a, b: tune.loguniform(a, b)),
    "quniform": ("tune.quniform", lambda a, b, q: tune.quniform(a, b, q)),
    "qloguniform": ("tune.qloguniform", lambda a, b, q: tune.qloguniform(a, b, q)),
    "randint": ("tune.randint", lambda a, b: tune.randint(a, b)),
    "lograndint": ("tune.lograndint", lambda a, b: tune.lograndint(a, b)),
    "qrandint": ("tune.qrandint", lambda a, b, q: tune.qrandint(a, b, q)),
    "randn": ("tune.randn", lambda mean, sd: tune.randn(mean, sd)),
    "choice": ("tune.choice", lambda values: tune.choice(list(values))),
    "grid_search": ("tune.grid_search", lambda values: tune.grid_search(list(values))),
}
_CALL = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.DOTALL)


def parse_domain(key: str, text: Any) -> Any:
    """`loguniform(0.1, 10)` -> tune.loguniform(0.1, 10); a number, bool or other string is a
    constant. A malformed domain is refused, naming the key and what is taken."""
    if not isinstance(text, str) or not (match := _CALL.match(text)):
        return text
    name, arguments = match.groups()
    if name not in DOMAINS:
        raise ValueError(
            f"--space '{key}': {text!r}: unknown domain {name!r}; expected one of "
            f"{', '.join(DOMAINS)}, e.g. loguniform(0.1, 10) or choice([8, 16])"
        )
    try:
        values = ast.literal_eval(f"({arguments},)")
        return DOMAINS[name][1](*values)
    except (ValueError, SyntaxError, TypeError) as err:
        raise ValueError(
            f"--space '{key}': {text!r}: {name} takes the arguments of {DOMAINS[name][0]} ({err})"
        ) from None


def load_space(path: str | Path) -> dict[str, Any]:
    """The search space in a YAML file: a mapping of config fields to domains or constants."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--space {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"--space {path}: not YAML ({err})".splitlines()[0]) from None
    if not isinstance(data, dict) or not data:
        raise ValueError(
            f"--space {path}: expected a mapping of config fields to domains, e.g.\n"
            "  latent_dim: choice([16, 32])\n  kl_weight: loguniform(0.25, 4)"
        )
    return {str(key): parse_domain(str(key), value) for key, value in data.items()}
