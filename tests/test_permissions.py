"""Who may do what on the team tracking server, for real: PostgreSQL, `mlflow server` with
basic-auth started by docker/tracking-server.sh, users and roles made by the admin with
docker/team-user.py. A writer who created nothing logs, registers, moves @champion and deletes
a version in what another writer created; a reader browses and pulls, and is refused every
change (HTTP 403, and the store is as it was); what our commands print when that happens.
"""

import base64
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import REPO, in_process, make_splits, tiny_config
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient
from requests import HTTPError
from servers import ADMIN_PASSWORD, team_server

from sweeps import cli, tracking
from sweeps.outbox import Outbox
from sweeps.registry import CHAMPION, KEY, log_and_register, make_champion
from vae_core import fit, load_model, read_checkpoint

SCRIPT = REPO / "docker" / "team-user.py"
EXPERIMENT = "vae-sweep/shapes"  # what a reader's shapes sweep would log into
MODEL = "team-vae"
DATA_KEY = "mnist/28px/1ch/center/all/val0.1/continuous"  # tiny_config's data
ROLES = {"wendy": "writer", "walt": "writer", "rita": "reader"}
CACHE_SECONDS = 3  # docker/tracking-server.sh's MLFLOW_AUTH_CACHE_TTL_SECONDS (30 by default)


def password(user: str) -> str:
    return ADMIN_PASSWORD if user == "admin" else f"{user}-long-password"


@contextmanager
def login(user: str):
    """MLflow's client sends these credentials with every request while inside."""
    before = {
        k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    os.environ["MLFLOW_TRACKING_USERNAME"] = user
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password(user)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def team_user(server: str, user: str, role: str, typed: str | None = None, by: str = "admin"):
    """docker/team-user.py run by `by` (the admin): its exit status and output; `typed` is the
    new user's password, on stdin. In this process (a new Python per call costs seconds);
    the fixture below runs the script once as a program."""
    spec = importlib.util.spec_from_file_location("team_user", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    stdin, sys.stdin = sys.stdin, io.StringIO(f"{typed}\n" if typed is not None else "")
    try:
        with login(by):
            return in_process(script.main, user, "--role", role, "--tracking-uri", server)
    finally:
        sys.stdin = stdin


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """The team server with its users: wendy and walt writers, rita a reader. Its workers
    trust a checked password for CACHE_SECONDS."""
    folder = tmp_path_factory.mktemp("server")
    with team_server(postgres, folder, MLFLOW_AUTH_CACHE_TTL_SECONDS=str(CACHE_SECONDS)) as url:
        admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
        made = subprocess.run(  # as the admin types it
            [sys.executable, str(SCRIPT), "wendy", "--role", "writer", "--tracking-uri", url],
            input=f"{password('wendy')}\n",
            env={**os.environ, **admin},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith("created wendy: writer")
        for user in ("walt", "rita"):
            made = team_user(url, user, ROLES[user], password(user))
            assert made.stdout.startswith(f"created {user}: {ROLES[user]}"), made.stderr
        yield url


@dataclass
class Published:
    experiment_id: str
    run_id: str  # wendy's run that trained version 1
    checkpoint: Path  # the file wendy registered


def version_tags(run_id: str, val_bpd: float) -> dict[str, str]:
    return {KEY: DATA_KEY, "val_bpd": str(val_bpd), "sweep_run_id": run_id}


@pytest.fixture(scope="module")
def published(server, tmp_path_factory):
    """What a writer's sweep leaves, made by wendy: the experiment, a finished run, and a tiny
    trained VAE registered as team-vae version 1 @champion (through sweeps.registry)."""
    checkpoint = tmp_path_factory.mktemp("ckpt") / "checkpoint.safetensors"
    fit(tiny_config(epochs=1), make_splits()).save(checkpoint)
    with login("wendy"):
        client = MlflowClient(server)
        experiment_id = tracking.create_experiment(client, EXPERIMENT, server)
        run_id = client.create_run(experiment_id).info.run_id
        client.log_metric(run_id, "val_bpd", 5.0)
        registered = log_and_register(server, run_id, checkpoint, MODEL, version_tags(run_id, 5))
        client.set_terminated(run_id)
    assert (registered.version, registered.alias) == ("1", CHAMPION)
    return Published(experiment_id, run_id, checkpoint)


def store_state(server: str) -> dict:
    """Everything a refused call could have changed, as the admin sees it."""
    with login("admin"):
        client = MlflowClient(server)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        models = client.search_registered_models()
        versions = client.search_model_versions(f"name = '{MODEL}'")
        return {
            "experiments": sorted(e.name for e in client.search_experiments()),
            "runs": {
                r.info.run_id: (r.info.status, r.data.metrics, r.data.params, r.data.tags)
                for r in runs
            },
            "artifacts": {
                r.info.run_id: sorted(f.path for f in client.list_artifacts(r.info.run_id))
                for r in runs
            },
            "models": {m.name: (m.aliases, m.tags, m.description) for m in models},
            "versions": {v.version: (v.tags, v.status, v.description) for v in versions},
        }


def test_the_admin_gives_roles_with_team_user_py_and_moves_users_between_them(server):
    """The roles are MLflow's own, assigned as the script says; a second run moves a user and
    asks no password; bad input is refused by name, and only an admin may run it."""
    with login("admin"):
        auth = AuthServiceClient(server)
        held = {user: [r.name for r in auth.list_user_roles(user)] for user in ROLES}
        roles = {r.name: r.id for r in auth.list_roles("default")}
        grants = {
            name: {
                (p.resource_type, p.resource_pattern, p.permission)
                for p in auth.list_role_permissions(roles[name])
            }
            for name in ("reader", "writer")
        }
    assert held == {user: [role] for user, role in ROLES.items()}
    assert grants == {
        "reader": {("experiment", "*", "READ"), ("registered_model", "*", "READ")},
        "writer": {("experiment", "*", "EDIT"), ("registered_model", "*", "MANAGE")},
    }

    def can_create_run() -> bool:
        with login("dora"):
            client = MlflowClient(server)
            experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
            try:
                client.set_terminated(client.create_run(experiment).info.run_id)
            except MlflowException as err:
                assert err.error_code == "PERMISSION_DENIED"
                return False
            return True

    with login("wendy"):  # the team's experiment, made by another user than dora
        tracking.create_experiment(MlflowClient(server), EXPERIMENT, server)
    assert team_user(server, "dora", "reader", password("dora")).returncode == 0
    assert not can_create_run()
    moved = team_user(server, "dora", "writer")  # no password asked: she exists
    assert moved.returncode == 0 and moved.stdout.startswith("dora: writer"), moved.stderr
    assert can_create_run()
    assert team_user(server, "dora", "reader").returncode == 0
    assert not can_create_run()

    short = team_user(server, "eve", "reader", "short")
    assert short.returncode == 2
    assert "the password for eve has 5 characters; the server takes 12 or more" in short.stderr
    not_admin = team_user(server, "mallory", "writer", password("mallory"), by="rita")
    assert not_admin.returncode == 2
    assert "only an admin of the server may create users" in not_admin.stderr
    with login("admin"):
        for never_made in ("eve", "mallory"):
            with pytest.raises(MlflowException) as missing:
                AuthServiceClient(server).get_user(never_made)
            assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_a_writer_logs_registers_moves_the_champion_and_deletes_a_version(
    server, published, tmp_path
):
    """walt created nothing here: the writer role alone lets him log into wendy's experiment
    and change her registered model, through the same functions a sweep uses."""
    with login("walt"):
        client = MlflowClient(server)
        run_id = client.create_run(published.experiment_id).info.run_id
        client.log_param(run_id, "latent_dim", 4)
        client.log_metric(run_id, "val_bpd", 6.0)
        client.log_text(run_id, "sharper", "notes/why.txt")  # through the server's proxy
        client.set_terminated(run_id)
        worse = log_and_register(
            server, run_id, published.checkpoint, MODEL, version_tags(run_id, 6)
        )
        assert (worse.version, worse.alias) == ("2", "challenger")  # chosen on validation
        picked = make_champion(server, MODEL, "2", "walt's pick")  # moves @champion
        assert picked.previous_champion == "1"
        assert client.get_registered_model(MODEL).aliases == {CHAMPION: "2"}
        client.set_registered_model_alias(MODEL, CHAMPION, "1")  # and back
        client.delete_model_version(MODEL, "2")
        assert [v.version for v in client.search_model_versions(f"name = '{MODEL}'")] == ["1"]
        assert client.get_registered_model(MODEL).aliases == {CHAMPION: "1"}
        assert client.get_run(run_id).data.metrics == {"val_bpd": 6.0}
        note = client.download_artifacts(run_id, "notes/why.txt", str(tmp_path))
        assert Path(note).read_text() == "sharper"


def test_a_reader_browses_and_pulls_the_champion_with_credentials_from_the_environment(
    server, published, tmp_path
):
    with login("rita"):
        client = MlflowClient(server)
        runs = client.search_runs([published.experiment_id], "metrics.val_bpd = 5.0")
        assert [r.info.run_id for r in runs] == [published.run_id]
        champion = client.get_model_version_by_alias(MODEL, CHAMPION)
        assert champion.version == "1" and champion.run_id == published.run_id
        pulled = in_process(
            cli.main, "--tracking-uri", server, "pull", f"{MODEL}@champion", "--out", tmp_path
        )
    assert pulled.returncode == 0, pulled.stderr
    file = tmp_path / "checkpoint.safetensors"
    assert file.read_bytes() == published.checkpoint.read_bytes()
    model = load_model(file)
    expected = read_checkpoint(published.checkpoint).model_state
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    images = model.sample(2)  # it runs
    assert images.shape == (2, 1, 28, 28) and torch.isfinite(images).all()


def register_version(client, published):
    source = client.get_model_version(MODEL, "1")
    return client.create_model_version(
        MODEL, source.source, run_id=published.run_id, model_id=source.model_id
    )


# What a reader may not do, one call each: the server answers 403 and nothing changes.
REFUSED = {
    "create a run": lambda c, p: c.create_run(p.experiment_id),
    "log to a run": lambda c, p: c.log_metric(p.run_id, "val_bpd", 0.1),
    "upload an artifact to a run": lambda c, p: c.log_text(p.run_id, "mine", "notes/rita.txt"),
    "register a model version": register_version,
    "set an alias": lambda c, p: c.set_registered_model_alias(MODEL, "rita-pick", "1"),
    "delete an alias": lambda c, p: c.delete_registered_model_alias(MODEL, CHAMPION),
    "delete a model version": lambda c, p: c.delete_model_version(MODEL, "1"),
    "delete the registered model": lambda c, p: c.delete_registered_model(MODEL),
}


@pytest.mark.parametrize("attempt", REFUSED)
def test_a_reader_is_refused_and_nothing_changes(server, published, attempt):
    before = store_state(server)
    with login("rita"), pytest.raises((MlflowException, HTTPError)) as refused:
        REFUSED[attempt](MlflowClient(server), published)
    if isinstance(refused.value, HTTPError):  # an artifact upload, straight to the proxy
        assert refused.value.response.status_code == 403
    else:
        assert (refused.value.error_code, refused.value.get_http_status_code()) == (
            "PERMISSION_DENIED",
            403,
        )
    assert store_state(server) == before


def test_a_changed_password_is_refused_by_every_worker_within_the_cache_time(server):
    """Checking a password costs each request ~0.2 s of server CPU, so the server's workers
    trust a checked one for a while (tracking-server.sh: MLFLOW_AUTH_CACHE_TTL_SECONDS). After
    the admin changes it, the new one works at once and no worker accepts the old one in a
    request sent later than that time after the change (each request goes to either of the
    two workers)."""
    assert team_user(server, "olga", "reader", password("olga")).returncode == 0

    def status(secret: str) -> int:
        token = base64.b64encode(f"olga:{secret}".encode()).decode()
        request = urllib.request.Request(
            f"{server}/api/2.0/mlflow/experiments/search?max_results=1",
            headers={"Authorization": f"Basic {token}"},
        )
        try:
            return urllib.request.urlopen(request, timeout=30).status
        except urllib.error.HTTPError as err:
            return err.code

    old, new = password("olga"), "olga-new-long-password"
    assert [status(old) for _ in range(6)] == [200] * 6  # checked, and trusted, by both workers
    with login("admin"):
        AuthServiceClient(server).update_user_password("olga", new)
    changed = time.monotonic()
    assert status(new) == 200
    sent = []  # (seconds after the change, status) for the old password
    while not sent or sent[-1][0] < CACHE_SECONDS + 2:
        sent.append((time.monotonic() - changed, status(old)))
    # Served from a worker's cache (200), or refused: 401, or 500 for a request the cached check
    # expired under. MLflow checks the password again after its handler ran (sender_is_admin in
    # filter_search_experiments) and reads .username off the 401 response that check returns.
    assert {code for _, code in sent} <= {200, 401, 500}, sent
    late = [code for at, code in sent if at > CACHE_SECONDS]
    assert len(late) >= 4 and set(late) == {401}, sent
    assert status(new) == 200


def test_log_calls_the_server_refuses_are_dropped_and_counted_not_kept(
    server, published, tmp_path
):
    """A trial's outbox keeps a call that waiting can cure (no server, 5xx, 429) and drops one
    the server refuses: a 403 on an image upload (requests' HTTPError from the artifact proxy)
    as much as one on a metric batch (MlflowException). Kept, it would be retried at every
    epoch and carried in every checkpoint for nothing."""
    grids = tmp_path / "grids"
    grids.mkdir()
    (grids / "reconstructions.png").write_bytes(b"not really a png")
    before = store_state(server)
    with login("rita"):
        box = Outbox(MlflowClient(server), published.run_id)
        box.log_artifacts(grids, "images/epoch_001")
        box.log_metrics([Metric("val_bpd", 0.1, 0, 1)])
    assert box.counters() == {"mlflow_pending": 0, "mlflow_late": 0, "mlflow_dropped": 2}
    assert store_state(server) == before


def test_a_reader_may_create_experiments_and_models_of_their_own_only(server, published):
    """MLflow's basic-auth lets any user create (docker/README.md says so): the creator manages
    what they made, and still may not change the team's."""
    with login("rita"):
        client = MlflowClient(server)
        own = client.create_experiment("rita-scratch")
        client.set_terminated(client.create_run(own).info.run_id)
        client.create_registered_model("rita-model")
        client.delete_registered_model("rita-model")
        with pytest.raises(MlflowException) as refused:
            client.create_run(published.experiment_id)
    assert refused.value.error_code == "PERMISSION_DENIED"


def test_what_a_reader_is_told_when_promote_or_a_sweep_is_refused(server, published, tmp_path):
    """One line naming the refused call, the permission it needs and who grants it: no
    traceback, and nothing changed."""
    before = store_state(server)
    with login("rita"):
        promoted = in_process(
            cli.main, "--tracking-uri", server, "promote", MODEL, "1", "--reason", "mine"
        )
    assert promoted.returncode == 2
    said = promoted.stderr
    assert "refused /api/2.0/mlflow/model-versions/set-tag to rita (403" in said
    assert "needs EDIT on it" in said
    assert "python docker/team-user.py rita --role writer" in said
    shutil.copy(REPO / "sweeps" / "shapes.py", tmp_path / "shapes.py")
    sweep = subprocess.run(
        [sys.executable, "shapes.py", "--smoke-test", "--max-epochs", "1"]
        + ["--tracking-uri", server, "--storage-path", str(tmp_path / "ray")],
        cwd=tmp_path,
        env={
            **os.environ,
            "MLFLOW_TRACKING_USERNAME": "rita",
            "MLFLOW_TRACKING_PASSWORD": password("rita"),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sweep.returncode == 2, sweep.stderr[-3000:]
    assert "Traceback" not in sweep.stderr
    last = sweep.stderr.strip().splitlines()[-1]
    assert last.startswith("shapes.py: error: the tracking server refused")
    assert "/runs/create to rita" in last and "needs EDIT on the experiment" in last
    assert "python docker/team-user.py rita --role writer" in last
    assert store_state(server) == before
