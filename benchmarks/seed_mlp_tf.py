"""Seed 001, the TensorFlow MNIST MLP VAE tutorial (Zoltowski), rebuilt from vae_core's pieces:
its training-loss curve next to the one the tutorial printed.

    python benchmarks/seed_mlp_tf.py --data-root ../shared/data            # 50 epochs
    python benchmarks/seed_mlp_tf.py --data-root ../shared/data --quick    # 3 epochs, a check

The model is vae_core's (Config + build_model): arch mlp 784-500-500-20 with sigmoid hidden
units, the tutorial's truncated-normal init, a sigmoid decoder mean and a Gaussian p(x|z) with
sigma_x = 0.5, so that -log p(x|z) = sum_i (x_i - x_hat_i)^2 / 0.5 + 784 (log 0.5 + log(2 pi) / 2):
the tutorial's reconstruction loss plus a constant. It trains on the tutorial's data: the last
55,000 of MNIST's 60,000 training images (TF's read_data_sets keeps the first 5,000 for
validation) as x / 255, shuffled every epoch, batches of 100, Adam 1e-3.

The loop is here, not vae_core's fit, because fit trains on dequantised pixels (x + u) / 256
and reports once per epoch, while the tutorial trains on x / 255 and prints the mean over the
epoch's 550 batches of each batch's loss taken before its update.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _report import command, commit, machine, save_json, write_section

from vae_core import Config, build_model
from vae_core.likelihoods import LOG_2PI
from vae_core.metrics import training_loss

NAME = "seed_mlp_tf"
TF_VALIDATION = 5000  # read_data_sets: images[:5000] are validation, images[5000:] train
# "Epoch: 00NN loss= ..." as the tutorial printed it, epochs 1 to 50.
TUTORIAL = [
    101.710126051, 74.687621460, 62.680545023, 58.401112726, 55.899328676,
    54.053136749, 52.529357328, 51.337708685, 50.435387976, 49.560607688,
    48.787097952, 48.163268800, 47.568813594, 46.933215880, 46.377606236,
    45.978230202, 45.603746449, 45.278219813, 45.043410381, 44.720613806,
    44.492978654, 44.294472053, 44.048974665, 43.889628795, 43.640362140,
    43.510595273, 43.327448203, 43.154704056, 43.003979319, 42.821728224,
    42.703358057, 42.536656369, 42.396530470, 42.276359086, 42.130464221,
    42.015516066, 41.914743937, 41.758315991, 41.607271354, 41.509473336,
    41.382994655, 41.248079432, 41.193113424, 41.081081238, 40.977247148,
    40.890645058, 40.766621212, 40.693657442, 40.613493368, 40.534157701,
]  # fmt: skip
TARGET = 0.03  # within 3% of the tutorial at its last epoch
SHOWN = (1, 2, 3, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50)  # epochs in the doc's table


def seed_config(epochs: int, seed: int) -> Config:
    return Config.from_dict(
        {
            "dataset": "mnist",
            "arch": "mlp",
            "hidden_dims": [500, 500],
            "latent_dim": 20,
            "activation": "sigmoid",
            "init": "truncated_normal",
            "likelihood": "gaussian",
            "sigma_x": 0.5,  # 1 / (2 sigma^2) = 1 / 0.5
            "mean_activation": "squash",  # x_hat = sigmoid(...)
            "batch_size": 100,
            "lr": 1e-3,
            "epochs": epochs,
            "grad_clip": None,
            "seed": seed,
            "device": "cpu",
        }
    )


def tf_train_images(data_root: str) -> torch.Tensor:
    """The tutorial's mnist.train.images: (55000, 1, 28, 28) float32 x / 255."""
    from torchvision import datasets

    pixels = datasets.MNIST(data_root, train=True).data[TF_VALIDATION:]  # uint8 (55000, 28, 28)
    return pixels.unsqueeze(1).float() / 255.0


def train(config: Config, images: torch.Tensor) -> list[dict]:
    """The tutorial's training loop; one record per epoch with its printed quantity."""
    seed, batch_size = config.train.seed, config.train.batch_size
    torch.manual_seed(seed)
    model = build_model(config)
    # TF's AdamOptimizer defaults are PyTorch's: betas (0.9, 0.999), eps 1e-8.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    shuffle, noise = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    dims = images[0].numel()
    constant = dims * (model.log_sigma_x.item() + 0.5 * LOG_2PI)  # 784 (log 0.5 + log(2 pi)/2)
    history = []
    for epoch in range(1, config.train.epochs + 1):
        start, losses = time.perf_counter(), []
        for index in torch.randperm(len(images), generator=shuffle).split(batch_size):
            x = images[index]  # (100, 1, 28, 28) in [0, 1], no noise
            posterior, _, px_z = model(x, noise)
            kl = posterior.kl()  # (B,)
            loss = training_loss(px_z.log_prob(x), kl, 1.0)  # what is optimised
            # The tutorial's `loss`: reduce_mean(reduce_sum((x - x_hat)^2 / 0.5) + KL).
            tutorial_loss = ((x - px_z.mean).pow(2).flatten(1).sum(1) / 0.5 + kl).mean().item()
            if not math.isclose(loss.item() - constant, tutorial_loss, abs_tol=1e-2):
                raise AssertionError(
                    f"-log p(x|z) + KL - {constant:.3f} = {loss.item() - constant:.4f} is not "
                    f"the tutorial's loss {tutorial_loss:.4f}: sigma_x is not 0.5"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(tutorial_loss)
        record = {
            "epoch": epoch,
            "loss": sum(losses) / len(losses),  # avg_loss: the mean of the 550 batch losses
            "tutorial": TUTORIAL[epoch - 1],
            "batches": len(losses),
            "epoch_seconds": time.perf_counter() - start,
        }
        record["difference"] = record["loss"] / record["tutorial"] - 1
        history.append(record)
        print(
            f"epoch {epoch:2d}: loss {record['loss']:.3f}, tutorial {record['tutorial']:.3f} "
            f"({record['difference']:+.1%}), {record['epoch_seconds']:.0f} s",
            flush=True,
        )
    return history


def section(history: list[dict], quick: bool, threads: int) -> str:
    last = history[-1]
    epochs = len(history)
    title = "## Seed 001: the TF MNIST MLP VAE tutorial (Zoltowski), rebuilt with vae_core"
    if quick:
        title += f" (QUICK CHECK: {epochs} epochs, not the benchmark)"
    met = abs(last["difference"]) <= TARGET
    rows = [
        f"| {r['epoch']} | {r['loss']:.2f} | {r['tutorial']:.2f} | {r['difference']:+.1%} |"
        for r in history
        if r["epoch"] in SHOWN or r["epoch"] == epochs
    ]
    if quick:
        verdict = f"{'within' if met else 'outside'} {TARGET:.0%} (the target is for epoch 50)"
    elif met:
        verdict = f"within the {TARGET:.0%} target"
    else:
        verdict = (
            f"**target missed** by {abs(last['difference']) - TARGET:.1%} beyond "
            f"the {TARGET:.0%} allowed"
        )
    seconds = sum(r["epoch_seconds"] for r in history) / epochs
    return "\n".join(
        [
            title,
            "",
            f"`{command()}` at commit {commit()}, on {machine()}, {threads} torch thread(s); "
            f"{seconds:.0f} s per epoch.",
            "",
            "Model from `Config` + `build_model`: arch `mlp` 784-500-500-20, sigmoid hidden "
            "units, `init: truncated_normal` (the tutorial's weight_variable / bias_variable: "
            "N(0, 0.1^2) cut at 2 sd, biases 0.1), sigmoid decoder mean, Gaussian p(x|z) with "
            "sigma_x = 0.5. Data as TF's `read_data_sets`: the last 55,000 training images "
            "(the first 5,000 are its validation set) as x / 255 without noise, reshuffled "
            "every epoch; batch 100, Adam 1e-3 (TF's betas and eps), no gradient clipping.",
            "",
            "**Loss** (the tutorial's `avg_loss`): for each batch, the mean over its 100 images "
            "of sum_i (x_i - x_hat_i)^2 / 0.5 + KL(q(z|x) || N(0, I)), one z per image, taken "
            "before that batch's update; the epoch's figure is the mean over its 550 batches. "
            "We optimise vae_core's -log p(x|z) + KL, the same up to the constant "
            "784 (log 0.5 + log(2 pi) / 2) = 177.05 nats (checked on every batch). The loop is "
            "in the script, not vae_core's `fit`, because `fit` trains on dequantised (x + u) "
            "/ 256 and reports per epoch, not per batch before the update.",
            "",
            "| epoch | ours | tutorial (printed) | difference |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Epoch {last['epoch']}: {last['loss']:.2f} against {last['tutorial']:.2f}, "
            f"{last['difference']:+.1%}: {verdict}. Full curves in "
            f"`benchmarks/results/{NAME}.json`.",
            "",
            "Not as the tutorial: PyTorch's random streams (one run, seed 0, against the "
            "tutorial's one run); vae_core bounds the posterior log-variance softly below 4 "
            "(logvar = 4 - softplus(4 - raw): within 0.02 of raw wherever raw <= 0, as in a "
            "trained posterior); the tutorial draws a second z for its printed loss, we print "
            "the loss of the z we train on (the same in distribution).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data", help="folder with MNIST/raw")
    parser.add_argument("--quick", action="store_true", help="3 epochs instead of 50")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = seed_config(3 if args.quick else len(TUTORIAL), args.seed)
    history = train(config, tf_train_images(args.data_root))
    save_json(
        NAME,
        {
            "mode": "quick" if args.quick else "full",
            "config": config.to_dict(),
            "target": TARGET,
            "final": history[-1],
            "epochs": history,
        },
    )
    write_section(NAME, section(history, args.quick, torch.get_num_threads()))


if __name__ == "__main__":
    main()
