"""A sweep's search space: checked against the base config before anything starts, and
described readably wherever it is logged.

A space maps config fields (flat names, e.g. `latent_dim`) to Ray Tune domains
(`tune.loguniform(0.1, 10)`, `tune.choice([8, 16])`, `tune.grid_search([...])`) or constants.
"""

from __future__ import annotations

from typing import Any

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


def describe_space(space: dict[str, Any]) -> dict[str, str]:
    """Each key's domain, described: what the parent run logs as `space.<key>` params."""
    return {key: describe(domain) for key, domain in space.items()}
