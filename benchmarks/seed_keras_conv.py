"""Seed 002, the Keras convolutional VAE with a 2-D latent space (Tae, 2020), trained with
vae_core's fit: where early stopping ends it and its best validation loss, against the
tutorial's printed run, and its latent scatter and 15 x 15 manifold.

    python benchmarks/seed_keras_conv.py --data-root ../shared/data           # up to 30 epochs
    python benchmarks/seed_keras_conv.py --data-root ../shared/data --quick   # up to 3, a check

The model is vae_core's arch `keras_conv` (the tutorial's layers, TF 'same' padding included)
with Keras' Glorot-uniform init and a Bernoulli decoder fed the [0, 1] grey levels x / 255, as
the tutorial feeds them to binary cross-entropy (`binarize: false`). Its loss, 784 x mean binary
cross-entropy + KL per image, averaged over the batch, is exactly vae_core's -log p(x|z) + KL
then, so vae_core's `fit` trains it: all 60,000 training images, batches of 32, Adam 1e-3, and
the 10,000 test images as the validation split, where `val_nelbo` is the tutorial's val_loss.
Keras' EarlyStopping(patience=2) on it is the on_epoch_end hook.
"""

from __future__ import annotations

import argparse
import math
import os

import torch
from _report import REPO, command, commit, machine, save_json, write_section

from vae_core import Config, Split, Splits, TrainState, fit
from vae_core.viz import latent_scatter, manifold_grid

NAME = "seed_keras_conv"
# (loss, val_loss) per epoch as the tutorial's Keras log printed them; EarlyStopping ended it
# after epoch 14, val_loss having last improved at epoch 12.
TUTORIAL = [
    (191.6765, 170.1529),
    (163.9683, 160.2263),
    (159.0007, 158.0777),
    (156.8238, 156.3414),
    (155.4041, 154.7498),
    (154.2847, 153.9668),
    (153.4675, 153.8024),
    (152.7539, 152.6393),
    (152.2562, 152.6557),
    (151.7278, 151.7882),
    (151.3973, 151.6642),
    (150.9899, 151.3316),
    (150.6191, 152.0779),
    (150.3378, 151.6977),
]
MAX_EPOCHS, PATIENCE = 30, 2  # the tutorial's `epochs` and EarlyStopping(patience=2)


def seed_config(epochs: int, seed: int) -> Config:
    return Config.from_dict(
        {
            "dataset": "mnist",
            "arch": "keras_conv",
            "latent_dim": 2,
            "activation": "relu",
            "init": "xavier",  # Keras' glorot_uniform kernels, zero biases
            "likelihood": "bernoulli",
            "binarize": False,  # x / 255 targets for the cross-entropy, as the tutorial
            "batch_size": 32,
            "lr": 1e-3,
            "epochs": epochs,
            "grad_clip": None,
            "seed": seed,
            "device": "cpu",
        }
    )


def tutorial_splits(data_root: str) -> Splits:
    """Train on all 60,000 training images; validate (and test) on the 10,000 test images."""
    from torchvision import datasets

    def split(train: bool) -> Split:
        mnist = datasets.MNIST(data_root, train=train)
        return Split(mnist.data.unsqueeze(1), mnist.targets)  # uint8 (N, 1, 28, 28), (N,)

    test = split(train=False)
    return Splits(train=split(train=True), val=test, test=test)


class EarlyStopping:
    """Keras' callbacks.EarlyStopping(patience): stop once val_loss has not gone below its best
    for `patience` epochs in a row (min_delta 0, no restoring of the best weights)."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.best_epoch, self.wait = patience, math.inf, 0, 0

    def __call__(self, state: TrainState) -> bool:
        record = state.history[-1]
        if record["val_nelbo"] < self.best:
            self.best, self.best_epoch, self.wait = record["val_nelbo"], record["epoch"], 0
        else:
            self.wait += 1
        shown = TUTORIAL[record["epoch"] - 1] if record["epoch"] <= len(TUTORIAL) else None
        print(
            f"epoch {record['epoch']:2d}: loss {record['train_loss']:.4f} val_loss "
            f"{record['val_nelbo']:.4f} (tutorial: {shown}), {record['epoch_seconds']:.0f} s",
            flush=True,
        )
        return self.wait >= self.patience


def _percent(ours: float, theirs: float) -> str:
    return f"{ours / theirs - 1:+.1%}"


def section(history: list[dict], stop: EarlyStopping, quick: bool, threads: int, figures: dict):
    tut_best = min(range(len(TUTORIAL)), key=lambda i: TUTORIAL[i][1])
    stopped = len(history) if stop.wait >= stop.patience else None
    last = history[-1]
    title = "## Seed 002: the Keras conv VAE with a 2-D latent space (Tae), trained by vae_core"
    if quick:
        title += f" (QUICK CHECK: at most {len(history)} epochs, not the benchmark)"
    per_epoch = []
    for i in range(max(len(history), len(TUTORIAL))):
        ours = history[i] if i < len(history) else None
        theirs = TUTORIAL[i] if i < len(TUTORIAL) else None
        cells = [
            f"{ours['train_loss']:.2f}" if ours else "",
            f"{theirs[0]:.2f}" if theirs else "",
            f"{ours['val_nelbo']:.2f}" if ours else "",
            f"{theirs[1]:.2f}" if theirs else "",
        ]
        per_epoch.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    stop_text = f"after epoch {stopped}" if stopped else f"not (ran all {len(history)})"
    seconds = sum(r["epoch_seconds"] for r in history) / len(history)
    rel = {k: os.path.relpath(v, REPO / "docs") for k, v in figures.items()}  # from the doc
    return "\n".join(
        [
            title,
            "",
            f"`{command()}` at commit {commit()}, on {machine()}, {threads} torch thread(s); "
            f"{seconds:.0f} s per epoch (the tutorial's Keras log: 11 s on its machine).",
            "",
            "Model: arch `keras_conv` (Conv2D 32 and 64, 3x3, stride 2, TF 'same' padding, "
            "ReLU; Dense 16; z_mean and z_log_var heads; latent 2; Dense 3136, Conv2DTranspose "
            "64 and 32 stride 2, Conv2DTranspose 1 stride 1: the tutorial's 69,076 + 65,089 "
            "parameters), `init: xavier` (Keras' Glorot-uniform, zero biases). Data: all "
            "60,000 training images as x / 255, reshuffled every epoch, batch 32, Adam 1e-3, no "
            "gradient clipping; validation on the 10,000 test images, as the tutorial. "
            "**Binarisation:** none, as the tutorial: it feeds the [0, 1] grey levels to binary "
            "cross-entropy, and so do we (`binarize: false`), so these losses are "
            "cross-entropies against grey levels, not likelihoods of binarised MNIST.",
            "",
            "**Loss** (Keras' `loss` and `val_loss`): per image, 784 x the mean binary "
            "cross-entropy of its pixels (from logits) + KL(q(z|x) || N(0, I)), one z per "
            "image; `loss` is the mean over the epoch's 1,875 batches, each before its update "
            "(vae_core's `train_loss`), `val_loss` the mean over the test set after the epoch "
            "(vae_core's `val_nelbo`). Early stopping: Keras' EarlyStopping(patience=2) on "
            "val_loss, at most 30 epochs, as an `on_epoch_end` hook of vae_core's `fit`.",
            "",
            "| figure | ours | tutorial (printed) | difference |",
            "|---|---|---|---|",
            f"| early stopping ends training | {stop_text} | after epoch {len(TUTORIAL)} "
            f"| {f'{stopped - len(TUTORIAL):+d} epochs' if stopped else 'n/a'} |",
            f"| best val_loss (its epoch) | {stop.best:.2f} ({stop.best_epoch}) | "
            f"{TUTORIAL[tut_best][1]:.2f} ({tut_best + 1}) | "
            f"{_percent(stop.best, TUTORIAL[tut_best][1])} |",
            f"| val_loss at the last epoch | {last['val_nelbo']:.2f} | {TUTORIAL[-1][1]:.2f} | "
            f"{_percent(last['val_nelbo'], TUTORIAL[-1][1])} |",
            f"| train loss at the last epoch | {last['train_loss']:.2f} | "
            f"{TUTORIAL[-1][0]:.2f} | {_percent(last['train_loss'], TUTORIAL[-1][0])} |",
            "",
            "| epoch | loss (ours) | loss (tutorial) | val_loss (ours) | val_loss (tutorial) |",
            "|---|---|---|---|---|",
            *per_epoch,
            "",
            "Where early stopping ends a run depends on one-sample noise in val_loss (the "
            "tutorial's epochs 9 and 13 went up by 0.02 and 0.75): the stopping epoch of one "
            "run against one run says little; the best val_loss is the comparable figure.",
            "",
            f"![latent scatter]({rel['scatter']}) ![manifold]({rel['manifold']})",
            "",
            "Left: E[z|x] of the 10,000 test images, coloured by digit (the tutorial's scatter). "
            "Right: decoder means on a 15 x 15 grid of z (vae_core's `manifold_grid`: the "
            "N(0, 1) quantiles 0.05 to 0.95 on both axes; the tutorial's own grid, "
            "linspace(-1, 3) x linspace(-2, 2), was placed for its run's latent layout).",
            "",
            "Not as the tutorial: PyTorch's random streams (one run, seed 0); Adam's eps is "
            "PyTorch's 1e-8 (Keras: 1e-7); vae_core's `evaluate` draws the validation z with "
            "the same seed every epoch (Keras draws afresh); vae_core bounds the posterior "
            "log-variance softly below 4; the cross-entropy is computed from logits (Keras "
            "clips probabilities to [1e-7, 1 - 1e-7]).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data", help="folder with MNIST/raw")
    parser.add_argument("--quick", action="store_true", help="at most 3 epochs instead of 30")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = seed_config(3 if args.quick else MAX_EPOCHS, args.seed)
    data = tutorial_splits(args.data_root)
    stop = EarlyStopping(PATIENCE)
    state = fit(config, data, on_epoch_end=stop)
    # Full runs draw into docs/figures; quick checks next to their JSON, never over the real.
    folder = REPO / "benchmarks" / "results" if args.quick else REPO / "docs" / "figures"
    figures = {
        "scatter": latent_scatter(
            state.model, data.test, folder / f"{NAME}_latent_scatter.png", max_points=10_000
        ),
        "manifold": manifold_grid(state.model, folder / f"{NAME}_manifold.png", n=15),
    }
    history = state.history
    save_json(
        NAME,
        {
            "mode": "quick" if args.quick else "full",
            "config": config.to_dict(),
            "stopped_after_epoch": len(history) if stop.wait >= PATIENCE else None,
            "best_val_loss": stop.best,
            "best_epoch": stop.best_epoch,
            "tutorial": {
                "stopped_after_epoch": len(TUTORIAL),
                "best_val_loss": min(v for _, v in TUTORIAL),
                "epochs": [{"loss": t, "val_loss": v} for t, v in TUTORIAL],
            },
            "figures": {k: str(v.relative_to(REPO)) for k, v in figures.items()},
            "epochs": history,
        },
    )
    write_section(NAME, section(history, stop, args.quick, torch.get_num_threads(), figures))


if __name__ == "__main__":
    main()
