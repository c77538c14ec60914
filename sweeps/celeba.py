"""Sweep VAEs on CelebA: 64 px by default (the PyTorch notebook's conv model), or
`--image-size 128` for the TF model (conv_bn, tight face crop).

    ray submit cluster/config.yaml sweeps/celeba.py -- --data-path s3://bucket/celeba64.arrow
    python sweeps/celeba.py --data-root /data --num-samples 16 --gpus-per-trial 0.25

Prepare the data once with `vae-data prepare celeba --root /data --out ...` and share the
file, or point --data-root at a folder every node has.
"""

import argparse

from ray import tune

from sweeps.engine import main

SEARCH_SPACE = {
    "latent_dim": tune.choice([8, 16, 32, 64, 128, 256]),
    "kl_weight": tune.loguniform(0.1, 10.0),
    "sigma_x": tune.loguniform(0.02, 0.3),
    "likelihood": tune.choice(["gaussian", "gaussian_learned"]),
    "lr": tune.loguniform(1e-4, 2e-3),
}

BASE_64 = {
    "dataset": "celeba",
    "arch": "conv",
    "image_size": 64,
    "crop": "center",
    "pixel_range": "signed",
    "batch_size": 128,
}
BASE_128 = {
    "dataset": "celeba",
    "arch": "conv_bn",
    "image_size": 128,
    "crop": "tight",
    "pixel_range": "signed",
    "batch_size": 64,
}


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-size",
        type=int,
        choices=(64, 128),
        default=64,
        help="64: the PyTorch notebook's conv model, centre crop (default); 128: the TF "
        "model, conv_bn on the tight face crop",
    )


def base_config(args: argparse.Namespace) -> dict:
    return BASE_128 if args.image_size == 128 else BASE_64


if __name__ == "__main__":
    main(
        SEARCH_SPACE,
        base_config,
        description=__doc__,
        defaults={"max_epochs": 20},
        add_flags=add_flags,
    )
