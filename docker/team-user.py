#!/usr/bin/env python3
"""Give a team member a role on the team tracking server: reader or writer.

    export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=...   # the admin's login
    python docker/team-user.py alice --role writer --tracking-uri https://mlflow.example.org

A new user is created first, with the password read from the terminal (twice), or from the
first line of stdin when it is not a terminal; an existing user keeps theirs. Running it again
with the other role moves the user to it.

The roles are MLflow's own (RBAC roles of the basic-auth app, in its "default" workspace),
created here on first use:

    reader  READ on every experiment and registered model: browse, search, `vae-sweep pull`.
    writer  EDIT on every experiment (create runs, log to them, upload artifacts) and MANAGE on
            every registered model (register versions, move @champion, delete versions): what
            a sweep does, into experiments and models that other writers created.

Only MLflow needs to be installed (the project's environment has it). Every user may still
create experiments and registered models of their own (MLflow's basic-auth lets anyone
create, and gives the creator MANAGE on what they created); a reader cannot change anyone
else's.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient

WORKSPACE = "default"  # where basic-auth keeps every grant while workspaces are off
ROLES = {  # role: {resource type: permission on every resource of that type ("*")}
    "reader": {"experiment": "READ", "registered_model": "READ"},
    "writer": {"experiment": "EDIT", "registered_model": "MANAGE"},
}
DESCRIPTIONS = {
    "reader": "vae-sweep: browse runs and pull models",
    "writer": "vae-sweep: run sweeps, register models, move @champion",
}
MIN_PASSWORD = 12  # MLflow refuses shorter passwords


def ensure_role(auth: AuthServiceClient, name: str) -> int:
    """The id of role `name`, created with its grants unless it exists (then left as the
    admin may have changed it)."""
    for role in auth.list_roles(WORKSPACE):
        if role.name == name:
            return role.id
    role = auth.create_role(WORKSPACE, name, DESCRIPTIONS[name])
    for resource_type, permission in ROLES[name].items():
        auth.add_role_permission(role.id, resource_type, "*", permission)
    return role.id


def new_password(username: str) -> str:
    """The new user's password: typed twice at a terminal, else stdin's first line."""
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {username}: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        raise ValueError(
            f"the password for {username} has {len(password)} characters; "
            f"the server takes {MIN_PASSWORD} or more"
        )
    return password


def user_exists(auth: AuthServiceClient, username: str) -> bool:
    try:
        auth.get_user(username)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def set_role(tracking_uri: str, username: str, role: str) -> str:
    """Create `username` if needed and leave them in `role` only; what was done."""
    auth = AuthServiceClient(tracking_uri)
    created = not user_exists(auth, username)
    if created:
        auth.create_user(username, new_password(username))
    wanted = ensure_role(auth, role)
    held = {r.id for r in auth.list_user_roles(username)}
    others = {ensure_role(auth, other) for other in ROLES if other != role}
    for other in held & others:
        auth.unassign_role(username, other)
    if wanted not in held:
        auth.assign_role(username, wanted)
    return f"{'created ' if created else ''}{username}: {role} ({DESCRIPTIONS[role]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="team-user.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("username")
    parser.add_argument("--role", choices=sorted(ROLES), required=True)
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="the server's URL (default $MLFLOW_TRACKING_URI)",
    )
    args = parser.parse_args(argv)
    if not args.tracking_uri or not args.tracking_uri.startswith(("http://", "https://")):
        parser.error(f"--tracking-uri {args.tracking_uri!r}: expected the server's http(s) URL")
    try:
        print(set_role(args.tracking_uri, args.username, args.role))
    except ValueError as err:
        parser.exit(2, f"team-user.py: error: {err}\n")
    except MlflowException as err:
        status = err.get_http_status_code()
        hint = {
            401: ": check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the admin's)",
            403: ": only an admin of the server may create users and assign roles",
        }.get(status, "")
        parser.exit(2, f"team-user.py: error: {str(err).splitlines()[0][:300]}{hint}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
