# syntax=docker/dockerfile:1
# (The line above must stay first: it selects the BuildKit Dockerfile syntax, for RUN --mount.)
#
# The GPU image every Ray node runs (the image `vae-sweep image` names in cluster/*.yaml).
# Build and push from the repository root, the build context:
#   docker build -f docker/trainer.Dockerfile -t "$(vae-sweep image)" .
#   docker push "$(vae-sweep image)"
# The tag's version is pyproject.toml's. docker/trainer.Dockerfile.dockerignore limits the
# context to the files copied below.

# Ray's GPU image of the tested Ray and Python: every node must run the Ray and Python of the
# driver. cu130 = CUDA 13.0, the CUDA of the torch build installed below (hosts need an NVIDIA
# driver for CUDA 13, 580 or newer). The tag can move; for rebuilds that are byte for byte the
# same, append the digest: rayproject/ray:2.60.0-py311-cu130@sha256:<digest>, as printed by
# `docker buildx imagetools inspect rayproject/ray:2.60.0-py311-cu130`.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cu130

# Stage 1: build the project's wheel, so the final image gets an installed package and no
# source tree. Same base as the final stage: no second image to pull and pin.
FROM ${RAY_IMAGE} AS builder

# Only what the wheel is built from. The base image runs as user ray (uid 1000, group users),
# and setuptools writes build/ and *.egg-info next to the sources: they must be ray's.
COPY --chown=ray:users pyproject.toml README.md /home/ray/src/
# The two packages of the wheel (pyproject.toml: packages vae_core*, sweeps*).
COPY --chown=ray:users vae_core /home/ray/src/vae_core
COPY --chown=ray:users sweeps /home/ray/src/sweeps

# The wheel of the project alone; the final stage installs its dependencies at pinned versions.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /home/ray/wheels /home/ray/src

# Stage 2: the image the nodes run.
FROM ${RAY_IMAGE}

# Unprivileged, as in the base image: Ray's conda Python under /home/ray/anaconda3 belongs to
# ray, so the cluster configs' `pip install --no-deps -e` works without root.
USER ray

# Home of ray: `ray submit` copies scripts to ~ and runs them from there.
WORKDIR /home/ray

# The versions the tests ran with; kept in the image for the installs below and any later one.
COPY --chown=ray:users docker/constraints.txt /home/ray/constraints.txt

# torch and torchvision built for CUDA 13.0 (the base image's CUDA) from PyTorch's index; the
# default PyPI build of torch 2.15 targets CUDA 13.2. The +cu130 label selects that index's
# build; the version itself is the one in constraints.txt.
RUN pip install --no-cache-dir -c /home/ray/constraints.txt \
        --extra-index-url https://download.pytorch.org/whl/cu130 \
        "torch==2.15.0+cu130" "torchvision==0.29.2+cu130"

# The project with the sweep extras (ray[tune], optuna, mlflow, psycopg, plotly), every
# dependency at its tested version. The wheel is mounted from stage 1, not copied, so it
# leaves no layer behind. pip check fails the build if a package the base image brought
# conflicts with a pinned version.
RUN --mount=type=bind,from=builder,source=/home/ray/wheels,target=/tmp/wheels \
    pip install --no-cache-dir -c /home/ray/constraints.txt \
        "$(ls /tmp/wheels/vae_sweep-*.whl)[sweep]" \
    && pip check

# VAE_CACHE_DIR: vae_core's cache of prepared datasets, on the node's own disk and shared by
# the trials of that node. PYTHONUNBUFFERED: trial output reaches Ray's logs as it is printed.
# PIP_CONSTRAINT: a later `pip install` on a node keeps the pinned versions.
ENV VAE_CACHE_DIR=/home/ray/.cache/vae-sweep \
    PYTHONUNBUFFERED=1 \
    PIP_CONSTRAINT=/home/ray/constraints.txt
