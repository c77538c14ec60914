"""The Ray cluster launcher configs pass Ray's own schema, offline, and explain every key."""

import re

import pytest
import yaml
from conftest import REPO
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIGS = sorted((REPO / "cluster").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_ray_validates_the_launcher_config(path):
    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(config))  # raises on anything Ray would refuse
    assert config["docker"]["image"].endswith(":0.1.0")  # the version of pyproject.toml
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    assert any("pip install" in c and "vae-sweep" in c for c in config["setup_commands"])
    secret = re.search(r"password\s*[:=]\s*(?!\.\.\.)\S", path.read_text(), re.IGNORECASE)
    assert secret is None, f"{path.name} holds a password: {secret.group(0)}"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_a_comment_above_every_key(path):
    lines = path.read_text().splitlines()
    key = re.compile(r"^\s*(- )?[A-Za-z_][\w.-]*:")
    for number, line in enumerate(lines):
        if not key.match(line):
            continue
        above = lines[number - 1].strip()
        in_inline_block = above.endswith(("{", ",")) or line.strip().startswith("- ")
        assert above.startswith("#") or in_inline_block, f"{path.name}:{number + 1}: {line}"
