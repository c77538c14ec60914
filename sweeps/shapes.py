"""Sweep VAEs on the built-in shapes dataset: the laptop quick start.

    python sweeps/shapes.py                      # 6 trials up to 16 epochs, ~11 min on 2 cores
    python sweeps/shapes.py --smoke-test         # 2 trials x 2 epochs, about a minute
    mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db

No download, no cluster, no server: the images are generated, Ray starts locally and MLflow
writes to SQLite in the working directory.
"""

from ray import tune

from sweeps.engine import main

SEARCH_SPACE = {
    "latent_dim": tune.choice([16, 32]),  # fewer dimensions keep no room for the shape
    "kl_weight": tune.loguniform(0.25, 4.0),
    "sigma_x": tune.loguniform(0.03, 0.3),  # the initial value when learned
    "likelihood": tune.choice(["gaussian", "gaussian_learned"]),
}

BASE_CONFIG = {
    "dataset": "shapes",
    # Batch norm (the CelebA 128 px seed's conv_bn) breaks the plateau where a decoder draws
    # every shape as a round blob of the right colour and place: by epoch 5, where the plain
    # conv still draws blobs at epoch 10. It costs about twice the conv's time per epoch, so
    # 16 epochs here cost what about 32 did there. 32 px: four times the epochs of 64 px.
    "arch": "conv_bn",
    "image_size": 32,
    "batch_size": 64,
    "lr": 1e-3,
    "iwae_samples": 16,
}

# ASHA's rungs at epochs 2 and 6: one trial in three goes on to 6, one in nine to all 16.
DEFAULTS = {"num_samples": 6, "max_epochs": 16, "grace_period": 2}

if __name__ == "__main__":
    main(SEARCH_SPACE, BASE_CONFIG, description=__doc__, defaults=DEFAULTS)
