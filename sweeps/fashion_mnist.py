"""Sweep VAEs on Fashion-MNIST (28 px, grayscale).

python sweeps/fashion_mnist.py --data-root ../shared/data --num-samples 32
ray submit cluster/config.yaml sweeps/fashion_mnist.py -- --data-root /data --num-samples 128
"""

from ray import tune

from sweeps.engine import main

SEARCH_SPACE = {
    "latent_dim": tune.choice([2, 4, 8, 16, 32, 64]),
    "kl_weight": tune.loguniform(0.1, 10.0),
    "sigma_x": tune.loguniform(0.02, 0.5),
    "likelihood": tune.choice(["gaussian", "gaussian_learned"]),
    "lr": tune.loguniform(3e-4, 3e-3),
}

BASE_CONFIG = {"dataset": "fashion_mnist", "arch": "conv", "batch_size": 128}

if __name__ == "__main__":
    main(SEARCH_SPACE, BASE_CONFIG, description=__doc__)
