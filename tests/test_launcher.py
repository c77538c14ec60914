"""The launcher path as a user runs it: `ray up`, `ray submit ... sweeps/shapes.py -- --smoke-test`
and `ray down`, through real SSH on loopback (sshd on 127.0.0.1 with a throw-away key), against
cluster/local.yaml with only the machine's keys replaced (IPs, user, key) and its `docker`
section removed (no Docker engine here). The cluster is locked: Ray's token from the user's
machine is on every node, and a request without it is refused.

The "node" is this machine seen through sshd: its HOME is a folder of the test's (sshd's
SetEnv), its Python a virtual environment layered on this one (the setup commands' `pip
install -e` lands there, not in the environment the suite runs in)."""

import contextlib
import getpass
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from conftest import REPO, migrated_store
from mlflow.tracking import MlflowClient
from servers import RAY_CLI, free_port, ray_processes, whole_machine_ray

from sweeps import provenance
from sweeps.tracking import ROLE

SSHD = Path("/usr/sbin/sshd")
pytestmark = pytest.mark.skipif(
    not SSHD.exists() or shutil.which("rsync") is None,
    reason="needs openssh-server and rsync (.ci/run installs them with apt-get)",
)


def start_sshd(folder: Path, port: int, node_home: Path) -> tuple[subprocess.Popen, Path]:
    """sshd on 127.0.0.1:port that lets in this user with a new key; returns it and the key."""
    key = folder / "id_ed25519"
    for path in (key, folder / "host_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
    shutil.copy(key.with_suffix(".pub"), folder / "authorized_keys")
    config = folder / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {folder / 'host_key'}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\n"
        f"SetEnv HOME={node_home}\n"
    )
    with contextlib.suppress(OSError):  # sshd's privilege-separation folder (as root)
        Path("/run/sshd").mkdir(exist_ok=True)
    sshd = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", config], stderr=open(folder / "sshd.log", "w")
    )
    return sshd, key


def node_python(node_home: Path) -> None:
    """The node's Python: a venv whose own site-packages come first (the checkout is installed
    there) and which sees this environment's packages (torch, ray, ...) after them; on the
    node's PATH through its login profile, as a machine's own setup would put it."""
    env = node_home / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", env], check=True)
    own = subprocess.run(
        [
            env / "bin" / "python",
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(own, "zz-suite-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    ray = env / "bin" / "ray"
    ray.write_text(
        f"#!{env / 'bin' / 'python'}\nimport sys\nfrom ray.scripts.scripts import main\n"
        "sys.exit(main())\n"
    )
    ray.chmod(0o755)
    (node_home / ".bash_profile").write_text(
        f'export PATH="{env / "bin"}:$PATH"\n[ -f ~/.bashrc ] && . ~/.bashrc\n'
    )


def local_config(path: Path, key: Path) -> dict:
    """cluster/local.yaml with this machine's keys: head 127.0.0.1, no workers, this user and
    the throw-away key; no Docker engine here, so no docker section."""
    config = yaml.safe_load((REPO / "cluster" / "local.yaml").read_text())
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["auth"].update(ssh_user=getpass.getuser(), ssh_private_key=str(key))
    del config["docker"]
    path.write_text(yaml.safe_dump(config))
    return config


CLIENT = "import ray; ray.init(address='127.0.0.1:6379'); print('ran', ray.get(ray.put(1)))"


def client(home: Path, extra: dict) -> subprocess.CompletedProcess:
    """A Ray driver from another shell of the machine, joining the head's GCS."""
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), **extra)
    return subprocess.run(
        [sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=120
    )


def test_ray_up_submit_and_down_over_ssh_run_a_locked_sweep(tmp_path):
    node_home, user_home, bin_dir = tmp_path / "node", tmp_path / "user", tmp_path / "bin"
    for folder in (node_home, user_home, bin_dir):
        folder.mkdir()
    port = free_port()
    sshd, key = start_sshd(tmp_path, port, node_home)
    # The launcher calls `ssh` (and rsync calls it too): the loopback sshd's port, on PATH.
    (bin_dir / "ssh").write_text(f'#!/bin/sh\nexec /usr/bin/ssh -p {port} "$@"\n')
    (bin_dir / "ssh").chmod(0o755)
    node_python(node_home)
    user = {**os.environ, "HOME": str(user_home), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    user.pop("RAY_ADDRESS", None)
    (user_home / ".config" / "vae-sweep").mkdir(parents=True)
    (user_home / ".config" / "vae-sweep" / "mlflow.env").write_text("")  # a store needs none
    subprocess.run(
        [RAY_CLI, "get-auth-token", "--generate"], env=user, check=True, capture_output=True
    )
    config = tmp_path / "local.yaml"
    local_config(config, key)
    uri = migrated_store(tmp_path / "mlflow.db")

    def launcher(*args, timeout=600):
        done = subprocess.run(
            [RAY_CLI, *args], cwd=REPO, env=user, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, (
            f"ray {args[0]}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        return done

    try:
        with whole_machine_ray():
            launcher("up", "-y", "--no-config-cache", str(config))
            assert (node_home / "vae-sweep" / "sweeps" / "shapes.py").exists()  # synced
            assert not (node_home / "vae-sweep" / ".venv").exists()  # .gitignore'd: not copied
            submitted = launcher(
                "submit",
                str(config),
                "sweeps/shapes.py",
                "--",
                "--smoke-test",
                "--name",
                "up",
                "--tracking-uri",
                uri,
                "--storage-path",
                str(tmp_path / "ray"),
            )
            assert "vae-sweep: sweep up done" in submitted.stdout
            # Locked: a driver without the token is refused by the cluster; with it, it runs.
            without = client(user_home / "stranger", {})
            assert "AuthenticationError" in without.stderr, without.stderr[-2000:]
            assert "InvalidAuthToken: Authentication token is missing" in without.stderr
            with_token = client(user_home, {"RAY_AUTH_MODE": "token"})
            assert with_token.returncode == 0 and "ran 1" in with_token.stdout, with_token.stderr
            launcher("down", "-y", str(config))
            assert ray_processes() == [], "ray down left Ray running"
    finally:
        sshd.terminate()
        sshd.wait(timeout=30)
    runs = MlflowClient(uri).search_runs(["1"])
    assert {r.data.tags.get(ROLE) for r in runs} == {"sweep", "trial"}
    assert all(r.info.status == "FINISHED" for r in runs)  # nothing left RUNNING
    (parent,) = [r for r in runs if r.data.tags.get(ROLE) == "sweep"]
    # What ran, on a node without .git: the synced checkout, its hash, the script as written.
    tags = parent.data.tags
    assert (
        tags["vae_sweep.source"] == str(node_home / "vae-sweep") and tags["git_sha"] == "unknown"
    )
    assert tags["vae_sweep.source_sha256"] == provenance.source_hash()  # this checkout's code
    script = MlflowClient(uri).download_artifacts(parent.info.run_id, "sweep/shapes.py", tmp_path)
    assert Path(script).read_text() == (REPO / "sweeps" / "shapes.py").read_text()
