"""The cluster configs pass their schemas, offline, and explain every key: the Ray cluster
launcher configs Ray's own schema, the KubeRay manifest the schema of KubeRay's RayCluster CRD."""

import copy
import json
import re
import shutil

import jsonschema
import pytest
import ray
import yaml
from conftest import REPO
from ray.autoscaler._private.util import prepare_config, validate_config
from record import record


def _is_k8s_manifest(path):
    doc = yaml.safe_load(path.read_text())
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


ALL_YAML = sorted((REPO / "cluster").glob("*.yaml"))
# Ray cluster launcher configs (`ray up`); the Kubernetes manifests are tested further down.
CONFIGS = [p for p in ALL_YAML if not _is_k8s_manifest(p)]
LAUNCHER = REPO / "cluster" / "config.yaml"
KUBERAY = REPO / "cluster" / "kuberay.yaml"
# openAPIV3Schema of KubeRay's RayCluster CRD, version v1; provenance in tests/schemas/README.md.
RAYCLUSTER_SCHEMA = REPO / "tests" / "schemas" / "kuberay-raycluster-v1.json"
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)
LITERAL_PASSWORD = re.compile(r"password\s*[:=]\s*(?!\.\.\.)\S", re.IGNORECASE)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_ray_validates_the_launcher_config(path):
    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(config))  # raises on anything Ray would refuse
    assert config["docker"]["image"].endswith(":0.1.0")  # the version of pyproject.toml
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    assert any("pip install" in c and "vae-sweep" in c for c in config["setup_commands"])
    secret = LITERAL_PASSWORD.search(path.read_text())
    assert secret is None, f"{path.name} holds a password: {secret.group(0)}"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c.update(max_workers="eight"), "'eight' is not of type 'integer'"),
        (lambda c: c.update(idle_timeout_minute=10), "'idle_timeout_minute' was unexpected"),
        (lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"), "node_config"),
        (lambda c: c.update(head_node_type="gpu"), "head_node_type"),
    ],
    ids=["wrong type", "misspelt key", "missing field", "unknown head type"],
)
def test_a_malformed_launcher_config_is_refused_naming_the_field(change, named, request):
    config = yaml.safe_load(LAUNCHER.read_text())
    change(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)) as err:
        validate_config(prepare_config(config))  # what `ray up` runs before starting anything
    assert named in str(err.value)
    record(
        "bad input",
        test="tests/test_cluster_configs.py::test_a_malformed_launcher_config_is_refused_naming_the_field",
        input=f"cluster/config.yaml, {request.node.callspec.id} (`ray up`)",
        message=str(err.value).splitlines()[0][:200],
        exit_code="refused",
        trials_started=0,
        store_changed=False,
        seconds_to_error="-",
    )


@pytest.mark.parametrize("path", ALL_YAML, ids=[p.name for p in ALL_YAML])
def test_a_comment_above_every_key(path):
    lines = path.read_text().splitlines()
    # Keys with dots and slashes too (nvidia.com/gpu, node.kubernetes.io/instance-type).
    key = re.compile(r"^\s*(- )?[A-Za-z_][\w./-]*:(\s|$)")
    for number, line in enumerate(lines):
        if not key.match(line):
            continue
        above = lines[number - 1].strip()
        in_inline_block = above.endswith(("{", ",")) or line.strip().startswith("- ")
        assert above.startswith("#") or in_inline_block, f"{path.name}:{number + 1}: {line}"


# --- The KubeRay RayCluster (cluster/kuberay.yaml) ---------------------------------------------


def _structural(schema):
    """The CRD schema as the Kubernetes API server applies it, for jsonschema.

    - x-kubernetes-int-or-string: an integer or a string (the CRD pairs it with that anyOf
      already; added where it does not).
    - nullable: null allowed too.
    - Structural schemas prune unknown fields: an object with properties and neither
      additionalProperties nor x-kubernetes-preserve-unknown-fields loses any other key without
      an error. Here such objects are closed, so that a misspelt key fails instead.
    """
    if isinstance(schema, list):
        return [_structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: _structural(v) for k, v in out["properties"].items()}
    for k in ("items", "additionalProperties", "not"):
        if isinstance(out.get(k), dict):
            out[k] = _structural(out[k])
    for k in ("anyOf", "allOf", "oneOf"):
        if k in out:
            out[k] = _structural(out[k])
    if out.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserve = out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def raycluster_validator():
    schema = _structural(json.loads(RAYCLUSTER_SCHEMA.read_text()))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture
def kuberay():
    return yaml.safe_load(KUBERAY.read_text())


def _crd_errors(validator, doc):
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]


def _pod_templates(doc):
    """(group name, pod template) of the head and of every worker group."""
    spec = doc["spec"]
    yield "head", spec["headGroupSpec"]["template"]
    for group in spec.get("workerGroupSpecs", []):
        yield group["groupName"], group["template"]


def _containers(template):
    pod = template["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def _literal_secrets(doc):
    """Env vars named like a secret whose value is written in the manifest."""
    envs = list(doc["spec"].get("autoscalerOptions", {}).get("env", []))
    for _, template in _pod_templates(doc):
        for container in _containers(template):
            envs += container.get("env", [])
    return [
        e["name"]
        for e in envs
        if SECRET_NAME.search(e["name"])
        and ("value" in e or "secretKeyRef" not in e.get("valueFrom", {}))
    ]


def test_kuberay_manifest_matches_the_raycluster_crd(kuberay, raycluster_validator):
    errors = _crd_errors(raycluster_validator, kuberay)
    assert not errors, "cluster/kuberay.yaml does not fit the RayCluster CRD:\n" + "\n".join(
        errors[:20]
    )


def _rename(d, old, new):
    d[new] = d.pop(old)


MISTAKES = {
    # A misspelt key, which the API server would prune silently.
    "misspelt workerGroupSpecs": (
        lambda m: _rename(m["spec"], "workerGroupSpecs", "workerGroupSpec"),
        "workerGroupSpec",
    ),
    "misspelt container resources": (
        lambda m: _rename(
            m["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0],
            "resources",
            "resource",
        ),
        "resource",
    ),
    # A required field left out.
    "no groupName": (lambda m: m["spec"]["workerGroupSpecs"][0].pop("groupName"), "groupName"),
    "no headGroupSpec": (lambda m: m["spec"].pop("headGroupSpec"), "headGroupSpec"),
    # rayStartParams values are strings.
    "num-cpus as a number": (
        lambda m: m["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
        "num-cpus",
    ),
    # A quantity that is neither an integer nor a Kubernetes quantity string.
    "bad memory quantity": (
        lambda m: m["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
            "resources"
        ]["limits"].update({"memory": "12 GB"}),
        "memory",
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_the_crd_check_rejects_mistakes(kuberay, raycluster_validator, mistake):
    spoil, word = MISTAKES[mistake]
    spoiled = copy.deepcopy(kuberay)
    spoil(spoiled)
    errors = _crd_errors(raycluster_validator, spoiled)
    assert errors, f"{mistake}: accepted"
    assert any(word in e for e in errors), errors


def test_quantities_may_be_integers_or_strings(kuberay, raycluster_validator):
    limits = kuberay["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
        "resources"
    ]["limits"]
    limits.update({"cpu": 4, "memory": "12Gi", "nvidia.com/gpu": "1"})
    assert not _crd_errors(raycluster_validator, kuberay)


def test_kuberay_cluster_identity(kuberay):
    assert kuberay["apiVersion"] == "ray.io/v1"
    assert kuberay["kind"] == "RayCluster"
    assert kuberay["metadata"]["name"] == "vae-sweep"
    # The image's Ray is the Ray the tests run; KubeRay reads rayVersion (e.g. for its probes).
    assert kuberay["spec"]["rayVersion"] == ray.__version__
    assert kuberay["spec"]["enableInTreeAutoscaling"] is True


def test_head_runs_no_trials_and_stays_inside_the_cluster(kuberay):
    head = kuberay["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    # Reached with `kubectl port-forward` only: no LoadBalancer, NodePort or Ingress.
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    name = kuberay["metadata"]["name"]
    assert f"kubectl port-forward service/{name}-head-svc 8265:8265" in KUBERAY.read_text()


def test_images_match_the_launcher_config(kuberay):
    image = yaml.safe_load(LAUNCHER.read_text())["docker"]["image"]
    for group, template in _pod_templates(kuberay):
        for container in _containers(template):
            assert container["image"] == image, (group, container["name"])
    assert kuberay["spec"].get("autoscalerOptions", {}).get("image", image) == image


def test_worker_groups_get_gpus_like_the_launcher_config(kuberay):
    launcher = yaml.safe_load(LAUNCHER.read_text())
    gpu_worker = launcher["available_node_types"]["gpu_worker"]
    groups = kuberay["spec"]["workerGroupSpecs"]
    assert groups
    for group in groups:
        pod = group["template"]["spec"]
        ray_container = pod["containers"][0]
        assert int(ray_container["resources"]["limits"]["nvidia.com/gpu"]) >= 1, group
        assert any(t["key"] == "nvidia.com/gpu" for t in pod.get("tolerations", [])), group
        assert group["minReplicas"] == gpu_worker["min_workers"]
        assert group["maxReplicas"] == gpu_worker["max_workers"] == launcher["max_workers"]
    idle = kuberay["spec"]["autoscalerOptions"]["idleTimeoutSeconds"]
    assert idle == launcher["idle_timeout_minutes"] * 60


def test_no_secret_in_the_kuberay_manifest(kuberay):
    assert _literal_secrets(kuberay) == []
    for group, template in _pod_templates(kuberay):
        ray_container = template["spec"]["containers"][0]
        refs = [e.get("secretRef", {}).get("name") for e in ray_container.get("envFrom", [])]
        assert "vae-sweep-mlflow" in refs, group
    secret = LITERAL_PASSWORD.search(KUBERAY.read_text())
    assert secret is None, f"kuberay.yaml holds a password: {secret.group(0)}"
    # The check itself: a password written into the manifest is caught.
    leaked = copy.deepcopy(kuberay)
    env = leaked["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"]
    env.append({"name": "MLFLOW_TRACKING_PASSWORD", "value": "hunter2"})
    assert _literal_secrets(leaked) == ["MLFLOW_TRACKING_PASSWORD"]


def test_pods_have_shm_a_node_local_cache_and_the_service_account(kuberay):
    dockerfile = REPO / "docker" / "trainer.Dockerfile"
    image_cache = None
    if dockerfile.exists():
        found = re.search(r"VAE_CACHE_DIR=(\S+)", dockerfile.read_text())
        image_cache = found and found.group(1)
    for group, template in _pod_templates(kuberay):
        pod = template["spec"]
        # S3 access for --storage-path through the account's IAM role, not keys.
        assert pod["serviceAccountName"] == "vae-sweep", group
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert not any("hostPath" in v for v in volumes.values()), group
        ray_container = pod["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in ray_container["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", group
        env = {e["name"]: e.get("value") for e in ray_container.get("env", [])}
        cache = env["VAE_CACHE_DIR"]
        assert "emptyDir" in volumes[mounts[cache]], group
        if image_cache:
            assert cache == image_cache, (group, "docker/trainer.Dockerfile", image_cache)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_launcher_cluster_is_locked_with_the_user_s_ray_token(path):
    """The token file of the machine that runs `ray up` goes to every node, and the shells that
    start Ray (and run `ray submit`'s driver) require it: tests/test_launcher.py proves that a
    client without it is refused on a real cluster."""
    config = yaml.safe_load(path.read_text())
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("export RAY_AUTH_MODE=token" in c for c in config["setup_commands"])


def test_every_kuberay_pod_requires_the_token_from_its_secret(kuberay):
    for group, template in _pod_templates(kuberay):
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", group
        secret = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": "vae-sweep-ray-token", "key": "auth_token"}, group


def test_vae_sweep_image_names_the_image_in_every_config_at_once(tmp_path, capsys):
    """The one place a user sets the image: `vae-sweep image REF` rewrites each config's image
    line and nothing else, Ray and the CRD schema still take them, and a bad reference or
    configs that disagree change no file."""
    from sweeps import cli

    cluster = tmp_path / "cluster"
    shutil.copytree(REPO / "cluster", cluster)
    before = {p.name: p.read_text() for p in cluster.glob("*.yaml")}
    old = yaml.safe_load(before["config.yaml"])["docker"]["image"]
    assert cli.main(["image", "--cluster-dir", str(cluster)]) == 0
    assert capsys.readouterr().out.strip() == old

    for bad, says in [
        ("ghcr.io/you/Trainer:0.1.0", "not an image reference"),
        ("ghcr.io/you/trainer", "no fixed version"),
        ("ghcr.io/you/trainer:latest", "no fixed version"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            cli.main(["image", bad, "--cluster-dir", str(cluster)])
        assert exit_.value.code == 2 and says in capsys.readouterr().err, bad
    assert {p.name: p.read_text() for p in cluster.glob("*.yaml")} == before

    new = "registry.example.org:5000/team/vae-sweep-trainer:0.1.0"
    assert cli.main(["image", new, "--cluster-dir", str(cluster)]) == 0
    assert f"was {old}" in capsys.readouterr().err
    for name, text in before.items():
        after = (cluster / name).read_text()
        lines = zip(text.splitlines(), after.splitlines(), strict=True)  # as many lines
        changed = [(a, b) for a, b in lines if a != b]
        assert changed and all(a.replace(old, new) == b for a, b in changed), name
    for name in ("config.yaml", "local.yaml"):
        config = yaml.safe_load((cluster / name).read_text())
        validate_config(prepare_config(config))
        assert config["docker"]["image"] == new
    manifest = yaml.safe_load((cluster / "kuberay.yaml").read_text())
    assert {c["image"] for _, t in _pod_templates(manifest) for c in _containers(t)} == {new}
    cli.main(["image", "--cluster-dir", str(cluster)])
    assert capsys.readouterr().out.strip() == new

    drifted = (cluster / "local.yaml").read_text().replace(new, "ghcr.io/other/trainer:0.0.9")
    (cluster / "local.yaml").write_text(drifted)
    with pytest.raises(SystemExit):
        cli.main(["image", "ghcr.io/you/trainer:0.2.0", "--cluster-dir", str(cluster)])
    assert "local.yaml names ['ghcr.io/other/trainer:0.0.9']" in capsys.readouterr().err
    assert yaml.safe_load((cluster / "config.yaml").read_text())["docker"]["image"] == new
