#!/bin/sh
# Starts the team's MLflow tracking server: PostgreSQL backend, basic-auth (users and
# permissions), artifacts proxied by the server (--serve-artifacts) to a folder or an S3 bucket.
# The ENTRYPOINT of docker/tracking-server.Dockerfile; tests/test_tracking_server.py runs the
# same file natively. Settings come from the environment:
#
#   MLFLOW_BACKEND_STORE_URI        required  runs and models: postgresql://USER:PASS@HOST:5432/mlflow
#   MLFLOW_AUTH_DATABASE_URI        required  users and permissions, in a database of their
#                                             own: postgresql://USER:PASS@HOST:5432/mlflow_auth
#   MLFLOW_ARTIFACTS_DESTINATION    required  a folder, or s3://BUCKET/PREFIX (credentials from
#                                             AWS_* variables or the machine's IAM role)
#   MLFLOW_AUTH_ADMIN_PASSWORD      required  12 characters or more; creates the admin user on the
#                                             first start, ignored once that user exists
#   MLFLOW_FLASK_SERVER_SECRET_KEY  required  16 characters or more; signs the web UI's sessions
#   MLFLOW_AUTH_ADMIN_USERNAME      admin     name of the admin user
#   MLFLOW_AUTH_DEFAULT_PERMISSION  READ      what users may do with experiments and models they
#                                             were not granted: READ, EDIT, MANAGE, NO_PERMISSIONS
#   MLFLOW_AUTH_CACHE_TTL_SECONDS   30        how long a worker trusts a checked password: checking
#                                             one costs ~0.2 s of CPU (PBKDF2), every request
#                                             of every trial sends one. A password changed or a
#                                             user deleted through the API is refused at once by
#                                             the worker that took the change, by the others
#                                             within this time. 0 checks every request.
#   HOST 0.0.0.0, PORT 5000, WORKERS 2        where the server listens, how many worker processes
#   PYTHON                          python    the interpreter that has mlflow installed
#
# There is no default password or key: the script stops, naming the variable, when one is
# missing. Special characters in a password inside a URI must be URL-encoded (@ as %40).
set -eu

die() {
    echo "tracking-server.sh: $*" >&2
    exit 2
}

# require NAME WHAT: stop unless the variable NAME is set and not empty.
require() {
    eval "_value=\${$1:-}"
    if [ -z "$_value" ]; then
        die "$1 is not set: $2"
    fi
}

# require_length NAME MIN: stop unless the variable NAME has at least MIN characters.
require_length() {
    eval "_value=\${$1}"
    if [ "${#_value}" -lt "$2" ]; then
        die "$1 has ${#_value} characters; at least $2 are required."
    fi
}

require MLFLOW_BACKEND_STORE_URI "the tracking database, e.g. postgresql://mlflow:PASSWORD@db:5432/mlflow"
require MLFLOW_AUTH_DATABASE_URI "the users database, e.g. postgresql://mlflow:PASSWORD@db:5432/mlflow_auth"
require MLFLOW_ARTIFACTS_DESTINATION "a folder or s3://BUCKET/PREFIX for the artifacts"
require MLFLOW_AUTH_ADMIN_PASSWORD "the password of the MLflow admin user (12 characters or more; there is no default)"
require_length MLFLOW_AUTH_ADMIN_PASSWORD 12
require MLFLOW_FLASK_SERVER_SECRET_KEY "a random string of 16 characters or more that signs the web UI's sessions, e.g. from: python -c 'import secrets; print(secrets.token_hex(32))'"
require_length MLFLOW_FLASK_SERVER_SECRET_KEY 16

MLFLOW_AUTH_ADMIN_USERNAME=${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
MLFLOW_AUTH_DEFAULT_PERMISSION=${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
HOST=${HOST:-0.0.0.0}
PORT=${PORT:-5000}
WORKERS=${WORKERS:-2}
MLFLOW_AUTH_CACHE_TTL_SECONDS=${MLFLOW_AUTH_CACHE_TTL_SECONDS:-30}

for name in PORT WORKERS MLFLOW_AUTH_CACHE_TTL_SECONDS; do
    eval "_value=\$$name"
    case $_value in
        "" | *[!0-9]*) die "$name must be a whole number, not '$_value'." ;;
    esac
done

# One value per line in the config file: a line break inside one would start a new setting.
for name in MLFLOW_AUTH_DATABASE_URI MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_AUTH_DEFAULT_PERMISSION; do
    eval "_value=\$$name"
    case $_value in
        *"
"*) die "$name contains a line break." ;;
    esac
done

# mlflow reads the config with Python's configparser, which expands %(...)s: a literal % (as in
# a URL-encoded password) must be written %%.
ini_value() {
    printf '%s' "$1" | sed 's/%/%%/g'
}

# The basic-auth app's config, in a new file that mktemp makes readable by this user only (it
# holds the database password). The admin password stays in the environment, where mlflow
# reads it.
MLFLOW_AUTH_CONFIG_PATH=$(mktemp "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")
cat >"$MLFLOW_AUTH_CONFIG_PATH" <<EOF
[mlflow]
default_permission = $(ini_value "$MLFLOW_AUTH_DEFAULT_PERMISSION")
database_uri = $(ini_value "$MLFLOW_AUTH_DATABASE_URI")
admin_username = $(ini_value "$MLFLOW_AUTH_ADMIN_USERNAME")
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = $MLFLOW_AUTH_CACHE_TTL_SECONDS
EOF
export MLFLOW_AUTH_CONFIG_PATH MLFLOW_BACKEND_STORE_URI

# exec: the server replaces this shell, so it gets the container's stop signal directly.
# --backend-store-uri is not on the command line: mlflow reads it from
# MLFLOW_BACKEND_STORE_URI, which keeps the database password out of the process list.
exec "${PYTHON:-python}" -m mlflow server \
    --app-name basic-auth \
    --serve-artifacts \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    --host "$HOST" \
    --port "$PORT" \
    --workers "$WORKERS"
