# syntax=docker/dockerfile:1
# (The line above must stay first: it selects the BuildKit Dockerfile syntax, for RUN --mount
# and COPY --chmod.)
#
# The team's MLflow tracking server: mlflow with basic-auth, PostgreSQL driver, boto3 for S3
# artifacts, started by docker/tracking-server.sh. docker/compose.yaml builds and runs it; by
# hand, from the repository root (the build context):
#   docker build -f docker/tracking-server.Dockerfile -t vae-sweep/tracking-server:0.1.0 .

# Debian slim with the Python the tests ran (3.11), patch release and Debian release pinned.
# For rebuilds that are byte for byte the same, append the digest (@sha256:...).
FROM python:3.11.16-slim-trixie

# Output reaches `docker compose logs` as it is printed; no .pyc files in the user's way.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# An unprivileged user with a fixed uid, and the default artifacts folder owned by it: a named
# volume mounted there for the first time takes over that ownership.
RUN groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --create-home --home-dir /home/mlflow \
        --shell /usr/sbin/nologin mlflow \
    && mkdir -p /var/lib/mlflow/artifacts \
    && chown -R mlflow:mlflow /var/lib/mlflow

# The server's packages at the versions the tests ran with (constraints.txt, mounted for this
# step only). pip check fails the build on a conflict between them.
RUN --mount=type=bind,source=docker/constraints.txt,target=/tmp/constraints.txt \
    pip install --no-cache-dir -c /tmp/constraints.txt "mlflow[auth]" "psycopg[binary]" boto3 \
    && pip check

# The start script: checks the settings, writes the auth config, runs `mlflow server`.
COPY --chmod=0755 docker/tracking-server.sh /usr/local/bin/tracking-server.sh

# Defaults the script reads: artifacts in the folder above (compose mounts a volume there),
# and listening on every interface of the container (compose decides what is published).
ENV MLFLOW_ARTIFACTS_DESTINATION=/var/lib/mlflow/artifacts \
    HOST=0.0.0.0 \
    PORT=5000

# Run as the user created above (mlflow), by number so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

# A writable working folder for anything mlflow puts in the current directory.
WORKDIR /home/mlflow

# The server's port (documentation; publishing is compose's job).
EXPOSE 5000

# Healthy when /health answers 200 (it needs no login). Python's urllib: the image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '5000'), timeout=4)"

# Exec form: the script (and, after its exec, mlflow) is PID 1 and receives `docker stop`.
ENTRYPOINT ["/usr/local/bin/tracking-server.sh"]
