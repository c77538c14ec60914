"""The sweep platform: vae_core as a Ray Tune trainable, Optuna + ASHA, MLflow logging and the
model registry. The only layer that imports ray, optuna and mlflow (see ../shared/DESIGN.md)."""
