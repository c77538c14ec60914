"""Train conv VAEs on MNIST with vae_core and time an epoch against the seed notebooks' input
pipeline (torchvision dataset + ToTensor per item + DataLoader), same model, same machine.

    python benchmarks/train_mnist.py --data-root ../shared/data --epochs 5

Writes its figures into docs/BENCHMARKS.md between this script's markers.
"""

from __future__ import annotations

import argparse
import time

import torch
from _report import command, commit, machine, save_json, write_section

from vae_core import Config, fit, load_splits
from vae_core.metrics import elbo_terms, evaluate, training_loss
from vae_core.model import build_model


def baseline_epoch(config: Config, val_images: torch.Tensor, data_root: str) -> float:
    """Seconds for one epoch the way the seed notebooks feed data, plus the same evaluation."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    dataset = datasets.MNIST(data_root, train=True, transform=transforms.ToTensor())
    n_train = len(dataset) - len(val_images)
    loader = DataLoader(
        Subset(dataset, range(n_train)), batch_size=config.train.batch_size, shuffle=True
    )
    torch.manual_seed(config.train.seed)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    start = time.perf_counter()
    for x, _ in loader:  # x: (B, 1, 28, 28) float in [0, 1], built image by image
        y = (x * 255 + torch.rand_like(x)) / 256  # the same dequantisation as vae_core
        log_px, kl = elbo_terms(model, y)
        loss = training_loss(log_px, kl, config.train.kl_weight)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
    evaluate(model, val_images)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    runs = {
        "conv, gaussian sigma_x=0.1": {"likelihood": "gaussian", "sigma_x": 0.1},
        "conv, gaussian_learned": {"likelihood": "gaussian_learned"},
        "conv, bernoulli": {"likelihood": "bernoulli"},
    }
    rows, seconds = [], []
    for name, changes in runs.items():
        config = Config.from_dict(
            {
                "dataset": "mnist",
                "data_root": args.data_root,
                "arch": "conv",
                "latent_dim": 16,
                "epochs": args.epochs,
                "device": "cpu",
                **changes,
            }
        )
        data = load_splits(config)
        history = fit(config, data, progress=True).history
        per_epoch = [r["epoch_seconds"] for r in history]
        seconds += per_epoch
        last = history[-1]
        rows.append(
            f"| {name} | {args.epochs} | {last['val_bpd']:.3f} | {last['val_mse']:.4f} "
            f"| {last['val_kl']:.1f} | {last['active_units']}/16 "
            f"| {sum(per_epoch) / len(per_epoch):.1f} |"
        )
        print(rows[-1], flush=True)
    base_config = Config.from_dict({"data_root": args.data_root, "device": "cpu"})
    baseline = baseline_epoch(base_config, data.val.images, args.data_root)
    ours = sum(seconds) / len(seconds)
    section = "\n".join(
        [
            "## vae-train on MNIST (conv, latent 16, batch 128, Adam 1e-3, CPU)",
            "",
            f"`{command()}` at commit {commit()} on {machine()}, "
            f"{torch.get_num_threads()} torch threads. 54,000 train / 6,000 val images; "
            "seconds per epoch "
            "include the validation pass. val_bpd is the beta-free selection metric "
            "(bernoulli's is over binarised pixels, not comparable with the gaussian rows).",
            "",
            "| run | epochs | val_bpd | val_mse | val_kl (nats) | active units | s/epoch |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Epoch time against the seed notebooks' pipeline (torchvision MNIST + ToTensor + "
            f"DataLoader, same model and evaluation, measured in the same process): "
            f"baseline {baseline:.1f} s, vae_core {ours:.1f} s: **{baseline / ours:.2f}x**.",
        ]
    )
    save_json("train_mnist", {"rows": rows, "baseline_epoch_s": baseline, "ours_epoch_s": ours})
    write_section("train_mnist", section)


if __name__ == "__main__":
    main()
