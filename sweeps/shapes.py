"""Sweep VAEs on the built-in shapes dataset: the laptop quick start.

    python sweeps/shapes.py                      # 8 trials, local Ray, ./mlflow.db
    python sweeps/shapes.py --smoke-test         # 2 trials x 2 epochs, about a minute
    mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db

No download, no cluster, no server: the images are generated, Ray starts locally and MLflow
writes to SQLite in the working directory.
"""

from ray import tune

from sweeps.engine import main

SEARCH_SPACE = {
    "latent_dim": tune.choice([4, 8, 16, 32]),
    "kl_weight": tune.loguniform(0.25, 4.0),
    "sigma_x": tune.loguniform(0.03, 0.3),  # the initial value when learned
    "likelihood": tune.choice(["gaussian", "gaussian_learned"]),
}

BASE_CONFIG = {
    "dataset": "shapes",
    "arch": "conv",
    "image_size": 64,
    "batch_size": 64,
    "lr": 1e-3,
    "iwae_samples": 16,
}

if __name__ == "__main__":
    main(
        SEARCH_SPACE,
        BASE_CONFIG,
        description=__doc__,
        defaults={"num_samples": 8, "max_epochs": 6, "grace_period": 2},
    )
