"""What ran: on a cluster the launcher syncs the checkout without `.git`, so a git SHA alone
says nothing there. The parent run records the package's version, a hash of the installed
`vae_core/` and `sweeps/` sources (the same on every node that has the same code), the git SHA
where there is a repository, and the sweep script itself (its search space as written)."""

from __future__ import annotations

import functools
import hashlib
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import sweeps
import vae_core

PACKAGES = (vae_core, sweeps)
VERSIONS = ("vae-sweep", "ray", "optuna", "mlflow", "torch", "pyarrow")


@functools.cache  # asked at the sweep's start and at registration: the code does not change
def git_sha() -> str:
    """The checkout's commit, or 'unknown' where there is no repository (a synced copy)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(sweeps.__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


@functools.cache
def source_hash() -> str:
    """sha256 over the installed packages' Python files: their paths and their bytes."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{package.__name__}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def script() -> Path | None:
    """The sweep script that is running (`python sweeps/celeba.py`, the copy `ray submit`
    made), or None when the sweep was started from other code."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(path) if path and path.endswith(".py") and Path(path).is_file() else None


def tags() -> dict[str, str]:
    """The parent run's record of what ran."""
    found = {
        "git_sha": git_sha(),
        "vae_sweep.source_sha256": source_hash(),
        "vae_sweep.source": str(Path(sweeps.__file__).parent.parent),
    }
    for package in VERSIONS:
        try:
            found[f"version.{package}"] = version(package)
        except PackageNotFoundError:
            found[f"version.{package}"] = "not installed"
    return found
