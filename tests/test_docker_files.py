"""Static checks of docker/: there is no Docker engine here or in CI, so the images are never
built by the tests. The Dockerfiles are read the way Docker reads them (dockerfile-parse), the
compose file is validated against the Compose Specification's JSON schema, and the pins are
checked against each other and pyproject.toml's ranges, never against what happens to be
installed here (the index serves newer patch releases every week; the image build's
`pip check` proves the pinned set installs together).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib

import jsonschema
import pytest
import yaml
from conftest import REPO
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

DOCKER = REPO / "docker"
DOCKERFILES = ["trainer.Dockerfile", "tracking-server.Dockerfile"]
SCRIPT = DOCKER / "tracking-server.sh"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
VERSION = PYPROJECT["version"]
# The instructions of the Dockerfile reference (docs.docker.com/reference/dockerfile).
INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip
# The secrets compose must take from the environment, with no default.
REQUIRED_SECRETS = {
    "POSTGRES_PASSWORD",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
}


def instructions(name: str) -> list[dict]:
    parser = DockerfileParser(str(DOCKER / name))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def final_stage(name: str) -> list[dict]:
    steps = instructions(name)
    last_from = max(i for i, step in enumerate(steps) if step["instruction"] == "FROM")
    return steps[last_from:]


def flags_and_args(value: str) -> tuple[dict[str, str], list[str]]:
    """`--from=stage --chown=ray a b /dest` -> ({"from": "stage", ...}, ["a", "b", "/dest"])."""
    flags, args = {}, []
    for token in shlex.split(value):
        if token.startswith("--") and not args:
            key, _, val = token[2:].partition("=")
            flags[key] = val
        else:
            args.append(token)
    return flags, args


def context_sources(name: str) -> list[str]:
    """Paths a Dockerfile reads from the build context (the repository root): COPY/ADD sources
    and RUN --mount=type=bind sources that do not come from another stage or image."""
    sources = []
    for step in instructions(name):
        flags, args = flags_and_args(step["value"]) if step["instruction"] != "RUN" else ({}, [])
        if step["instruction"] in {"COPY", "ADD"} and "from" not in flags:
            sources += args[:-1]
        if step["instruction"] == "RUN":
            for mount in re.findall(r"--mount=(\S+)", step["value"]):
                options = dict(item.partition("=")[::2] for item in mount.split(","))
                if options.get("type") == "bind" and "from" not in options:
                    sources.append(options["source"])
    return sources


def pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus **) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, dockerfile: str) -> bool:
    """Whether BuildKit leaves `path` out of the context, by the ignore file named after the
    Dockerfile: the last matching pattern wins; a pattern matching a folder covers its files."""
    lines = (DOCKER / f"{dockerfile}.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def constraint_lines() -> list[tuple[str, str]]:
    pins = []
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins.append((canonicalize_name(name), version))
    return pins


def constraints() -> dict[str, str]:
    return dict(constraint_lines())


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} substitution; raises KeyError for a
    required variable that is unset or empty."""

    def substitute(match: re.Match) -> str:
        name, operator, argument = match.groups()
        if env.get(name):
            return env[name]
        if operator in {":?", "?"}:
            raise KeyError(name)
        return argument if operator in {":-", "-"} else ""

    return VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def strings(node, path=""):
    """(path, value) of every string in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            yield from strings(value, f"{path}[{n}]")
    elif isinstance(node, str):
        yield path, node


# Dockerfiles


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_instruction_is_a_dockerfile_instruction(name):
    unknown = [
        s["instruction"] for s in instructions(name) if s["instruction"] not in INSTRUCTIONS
    ]
    assert not unknown, f"{name}: unknown instructions {unknown}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_base_image_is_pinned_by_a_tag(name):
    parser = DockerfileParser(str(DOCKER / name))
    stages = {s["value"].split()[-1] for s in instructions(name) if " AS " in s["value"].upper()}
    for image in parser.parent_images:
        if image in stages:
            continue
        reference = image.split("@")[0]
        repository, _, tag = reference.rpartition(":")
        assert repository and "/" not in tag, f"{name}: FROM {image} has no tag"
        assert tag != "latest", f"{name}: FROM {image} moves with every release"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_stage_runs_as_an_unprivileged_user(name):
    users = [s["value"] for s in final_stage(name) if s["instruction"] == "USER"]
    assert users, f"{name}: the final stage sets no USER, so it runs as the base image's user"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"{name}: the final stage runs as {users[-1]}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_files_from_the_build_context_exist_and_are_not_ignored(name):
    sources = context_sources(name)
    assert sources, f"{name}: reads nothing from the context?"
    for source in sources:
        assert (REPO / source).exists(), f"{name}: {source} is not in the repository"
        assert not dockerignored(source, name), f"{name}.dockerignore leaves out {source}"
        if (REPO / source).is_dir():
            files = [p.relative_to(REPO).as_posix() for p in (REPO / source).rglob("*.py")]
            kept = [f for f in files if not dockerignored(f, name)]
            assert kept, f"{name}.dockerignore leaves out every file of {source}"


@pytest.mark.parametrize("name", DOCKERFILES)
@pytest.mark.parametrize(
    "path",
    [".git/HEAD", "runs/shapes/metrics.json", "mlruns/0/meta.yaml", "mlflow.db", "data/x.arrow",
     "ray_results/exp/result.json", "benchmarks/bench.py", "tests/test_models.py",
     "vae_core/__pycache__/config.cpython-311.pyc", "docker/.env"],
)  # fmt: skip
def test_the_build_context_leaves_out_local_state_and_tests(name, path):
    assert dockerignored(path, name), f"{name}.dockerignore lets {path} into the context"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_pip_install_is_pinned(name):
    installs = []
    for step in instructions(name):
        if step["instruction"] != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", step["value"]):
            tokens = shlex.split(command)
            if "pip" in tokens and "install" in tokens:
                installs.append(tokens[tokens.index("install") + 1 :])
    assert installs, f"{name}: no pip install found"
    for args in installs:
        constrained = any(
            (a in {"-c", "--constraint"} and b.endswith("constraints.txt"))
            or (a.startswith("--constraint=") and a.endswith("constraints.txt"))
            for a, b in zip(args, [*args[1:], ""], strict=True)
        )
        requirements = [a for a in args if not a.startswith("-") and "://" not in a]
        pinned = requirements and all("==" in r for r in requirements)
        assert constrained or pinned, f"{name}: unpinned `pip install {' '.join(args)}`"


def test_constraints_pin_each_package_once_exactly():
    names = [name for name, _ in constraint_lines()]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
    for name, version in constraint_lines():
        assert str(Version(version)) == version, f"{name}=={version} is not an exact release"


def test_the_trainer_build_checks_the_pinned_set_installs_together():
    runs = [
        step["value"] for step in final_stage("trainer.Dockerfile") if step["instruction"] == "RUN"
    ]
    installs = [
        i for i, value in enumerate(runs) if "constraints.txt" in value and "[sweep]" in value
    ]
    assert installs and "pip check" in runs[installs[-1]], (
        "the project install must end in pip check"
    )


def test_constraints_pin_every_dependency_within_pyproject_ranges():
    pins = constraints()
    wanted = [*PYPROJECT["dependencies"], *PYPROJECT["optional-dependencies"]["sweep"]]
    wanted += ["psycopg-binary", "boto3", "mlflow-skinny", "sqlalchemy"]  # the tracking server
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"docker/constraints.txt does not pin {name}"
        assert Version(pins[name]) in requirement.specifier, f"{name}=={pins[name]} vs {text}"


def python_of_images() -> dict[str, str]:
    """The Python (major.minor) of each image, from its base image tag."""
    [ray_image] = set(DockerfileParser(str(DOCKER / "trainer.Dockerfile")).parent_images)
    ray_python = re.fullmatch(r"rayproject/ray:[\d.]+-py(\d)(\d+)-cu\d+(@sha256:\w+)?", ray_image)
    [server_image] = DockerfileParser(str(DOCKER / "tracking-server.Dockerfile")).parent_images
    server_python = re.fullmatch(r"python:(\d+\.\d+)\.\d+-slim-\w+(@sha256:\w+)?", server_image)
    assert ray_python, f"trainer.Dockerfile: FROM {ray_image} is not a Ray GPU image"
    assert server_python, (
        f"tracking-server.Dockerfile: FROM {server_image} is not python:X.Y.Z-slim"
    )
    return {
        "trainer": f"{ray_python[1]}.{ray_python[2]}",
        "tracking-server": server_python[1],
    }


def test_both_images_run_one_python_that_pyproject_accepts():
    pythons = python_of_images()
    assert len(set(pythons.values())) == 1, pythons  # the driver's pickles reach every node
    requires = SpecifierSet(PYPROJECT["requires-python"])
    assert Version(pythons["trainer"]) in requires, (pythons, str(requires))


def test_trainer_base_is_the_pinned_ray():
    for image in DockerfileParser(str(DOCKER / "trainer.Dockerfile")).parent_images:
        match = re.fullmatch(r"rayproject/ray:([\d.]+)-py\d+-cu\d+(@sha256:\w+)?", image)
        assert match and match[1] == constraints()["ray"], (
            f"{image} vs ray=={constraints()['ray']}"
        )


def test_trainer_torch_matches_the_base_cuda_and_the_constraints():
    text = " ".join(s["value"] for s in instructions("trainer.Dockerfile"))
    base_cuda = re.search(r"rayproject/ray:[^ ]*-(cu\d+)", text)[1]
    index = re.findall(r"download\.pytorch\.org/whl/(cu\d+)", text)
    assert index == [base_cuda], f"torch wheel index {index} vs base image {base_cuda}"
    pins = constraints()
    for package in ("torch", "torchvision"):
        found = re.findall(rf'"{package}==([\d.]+)\+(cu\d+)"', text)
        assert found == [(pins[package], base_cuda)], f"{package} in trainer.Dockerfile: {found}"


def test_cluster_configs_and_build_commands_name_the_same_trainer_image():
    images = {
        name: yaml.safe_load((REPO / "cluster" / name).read_text())["docker"]["image"]
        for name in ("config.yaml", "local.yaml")
    }
    for name, image in images.items():
        assert image.endswith(f":{VERSION}"), f"cluster/{name}: {image} vs version {VERSION}"
    # The build commands tag what `vae-sweep image` set, never a name of their own.
    build = re.compile(
        r'docker (?:build -f docker/trainer\.Dockerfile -t|push) ("\$\(vae-sweep image\)"|\S+)'
    )
    for doc in (DOCKER / "trainer.Dockerfile", DOCKER / "README.md", REPO / "README.md"):
        tags = set(build.findall(doc.read_text()))
        named = {'"$IMAGE"', '"$(vae-sweep image)"'}
        assert tags and tags <= named, f"{doc.name} builds or pushes {tags}"
        if '"$IMAGE"' in tags:
            assert 'vae-sweep image "$IMAGE"' in doc.read_text(), doc.name


# The tracking server's start script


def test_start_script_parses_and_is_executable():
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")
    assert SCRIPT.stat().st_mode & 0o111, (
        "the compose image copies it with --chmod, but tests run it"
    )
    for shell in ("sh", "bash"):
        result = subprocess.run([shell, "-n", str(SCRIPT)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed")
def test_start_script_passes_shellcheck():
    result = subprocess.run(
        ["shellcheck", "--shell=sh", str(SCRIPT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_start_script_runs_the_server_with_basic_auth_and_proxied_artifacts():
    text = SCRIPT.read_text()
    start = text[text.index('exec "${PYTHON:-python}" -m mlflow server') :]
    assert "--app-name basic-auth" in start and "--serve-artifacts" in start
    steps = final_stage("tracking-server.Dockerfile")
    [entrypoint] = [json.loads(s["value"]) for s in steps if s["instruction"] == "ENTRYPOINT"]
    copies = [flags_and_args(s["value"])[1] for s in steps if s["instruction"] == "COPY"]
    assert ["docker/tracking-server.sh", entrypoint[0]] in copies


# compose.yaml


def test_compose_file_follows_the_compose_specification():
    schema = json.loads((REPO / "tests" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, errors
    for name, service in compose()["services"].items():  # the schema's service constraint
        assert "image" in service or "build" in service, name


def test_compose_services_have_healthchecks_and_restart():
    for name, service in compose()["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", name


def test_compose_named_volumes_are_declared_and_bind_mounts_exist():
    declared = set(compose().get("volumes") or {})
    used = set()
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/", "~")):
                assert (DOCKER / source).exists(), f"{name} mounts missing {source}"
            else:
                used.add(source)
    assert used <= declared, f"volumes used but not declared: {used - declared}"
    assert declared <= used, f"volumes declared but unused: {declared - used}"


def test_compose_has_no_password_literals():
    secret_key = re.compile(r"PASSWORD|SECRET")
    required = re.compile(r"\$\{(\w+):\?[^}]+\}")
    for path, value in strings(compose()):
        key = path.rsplit(".", 1)[-1]
        if secret_key.search(key):
            assert required.fullmatch(value), f"{path} = {value!r}: use ${{VAR:?message}}"
        for userinfo in re.findall(r"://[^/@\s]*:([^/@\s]*)@", value):
            assert required.fullmatch(userinfo), f"{path}: password in a URI: {userinfo!r}"
    text = " ".join(value for _, value in strings(compose()))
    assert set(re.findall(r"\$\{(\w+):\?", text)) == REQUIRED_SECRETS


def test_compose_refuses_to_start_without_each_secret():
    everything = {name: "x" * 16 for name in REQUIRED_SECRETS}
    for name in REQUIRED_SECRETS:
        env = {k: v for k, v in everything.items() if k != name}
        with pytest.raises(KeyError, match=name):
            for _, value in strings(compose()):
                interpolate(value, env)


def test_compose_publishes_the_server_on_loopback_by_default():
    env = {name: "x" * 16 for name in REQUIRED_SECRETS}
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            host_ip, host_port, container_port = interpolate(port, env).split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {port} on {host_ip}"
            assert (host_port, container_port) == ("5000", "5000")


def test_compose_mlflow_service_runs_the_start_script_after_the_database():
    services = compose()["services"]
    mlflow = services["mlflow"]
    assert "command" not in mlflow and "entrypoint" not in mlflow  # the image's script runs
    assert (REPO / "docker" / mlflow["build"]["context"]).resolve() == REPO
    assert mlflow["build"]["dockerfile"] == "docker/tracking-server.Dockerfile"
    assert mlflow["image"].endswith(f":{VERSION}")
    assert mlflow["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    # The auth database the server is given is the one the init script creates.
    auth_uri = mlflow["environment"]["MLFLOW_AUTH_DATABASE_URI"]
    database = auth_uri.rsplit("/", 1)[-1]
    assert f"CREATE DATABASE {database};" in (DOCKER / "postgres-init.sql").read_text()


def test_env_example_documents_every_variable_without_values():
    example = (DOCKER / ".env.example").read_text()
    text = " ".join(value for _, value in strings(compose()))
    referenced = set(re.findall(r"\$\{(\w+)", text))
    passed_on = {k for k, v in compose()["services"]["mlflow"]["environment"].items() if v is None}
    for name in referenced | passed_on:
        assert re.search(rf"^#? ?{name}=", example, re.M), f".env.example lacks {name}"
    for name in REQUIRED_SECRETS:
        assert re.search(rf"^{name}=$", example, re.M), f".env.example: {name} must be empty"
    assert ".env" in (DOCKER / ".gitignore").read_text().split()
