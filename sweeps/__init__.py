"""The sweep platform: vae_core as a Ray Tune trainable, Optuna + ASHA, MLflow logging and the
model registry. The only layer that imports ray, optuna and mlflow (see ../shared/DESIGN.md)."""

import os

# Trials checkpoint every epoch, so Tune snapshots its state often; with small trials that is
# expected and its warning is noise. Ray reads this when ray.tune is first imported.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
