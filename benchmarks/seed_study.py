"""Seed 003 (Méndez, "VAEs! Generating images with Tensorflow"), its MNIST / Fashion-MNIST
study redone with vae_core's `fit`: reconstructions of fixed test images after every epoch
(latent 5), the 2-D latent space of the test set as it evolves (latent 2), and latent 2 with
against without the KL term (kl_weight 0): where the test images land, and what samples from
the prior N(0, I) look like.

    python benchmarks/seed_study.py --data-root ../shared/data           # both datasets, 20 epochs
    python benchmarks/seed_study.py --data-root ../shared/data --quick   # MNIST, a check

The seed's text gives latent sizes 5 and 2 and "20 epochs"; the rest is its linked code
(github.com/mmeendez8/Autoencoder, autoencoder.py): two 4x4 stride-2 convolutions of 64
filters, batch 128, Adam 5e-4, 20 epochs, binary cross-entropy against the [0, 1] grey levels
plus the KL, TF's Glorot-uniform initialisation, no gradient clipping.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from _report import REPO, command, commit, machine, save_json, write_section

from vae_core import Config, Splits, TrainState, build_model, fit, load_splits
from vae_core.metrics import evaluate
from vae_core.viz import latent_means, sample_grid, save_grid

NAME = "seed_study"
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": [
        "T-shirt", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Boot",
    ],
}  # fmt: skip
TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
SCATTER_POINTS = 5000  # test images per scatter panel (the seed plots all 10,000)
QUICK_LIMIT = 10_000  # --quick: the first 10,000 images of each split
KNN = 10  # neighbours for the class-purity figure of a 2-D latent space


def seed_config(
    dataset: str, data_root: str, latent: int, kl_weight: float, epochs: int, limit: int | None
) -> Config:
    """The seed's model and optimiser, as far as vae_core has them (see the section text)."""
    return Config.from_dict(
        {
            "dataset": dataset,
            "data_root": data_root,
            "limit": limit,
            "arch": "conv",
            "widths": [64, 64],  # 28 -> 14 -> 7 with 64 filters, 4x4, stride 2, as the seed
            "init": "xavier",  # tf.layers' default Glorot-uniform kernels, zero biases
            "latent_dim": latent,
            "likelihood": "bernoulli",
            "binarize": False,  # cross-entropy against x / 255, as the seed
            "kl_weight": kl_weight,
            "batch_size": 128,
            "lr": 5e-4,
            "epochs": epochs,
            "grad_clip": None,
            "seed": 0,
            "device": "cpu",
        }
    )


def first_of_each_class(labels: torch.Tensor) -> torch.Tensor:
    """Index of the first test image of every class, in class order: the fixed images."""
    return torch.stack([(labels == c).nonzero()[0, 0] for c in range(10)])


class Recorder:
    """on_epoch_end hook: reconstructions of fixed images and latent means at chosen epochs."""

    def __init__(self, data: Splits, fixed: torch.Tensor | None, snapshots: set[int]) -> None:
        self.data, self.fixed, self.snapshots = data, fixed, snapshots
        self.recons: list[torch.Tensor] = []  # one (10, 1, 28, 28) per epoch
        self.latents: dict[int, torch.Tensor] = {}  # epoch -> (N, 2) posterior means

    def snapshot(self, model, epoch: int) -> None:
        was_training = model.training
        model.eval()
        if self.fixed is not None:
            x = model.coding.encode(self.fixed, dequantize=False)
            self.recons.append(model.reconstruct(x).cpu())
        if epoch in self.snapshots:
            self.latents[epoch] = latent_means(model, self.data.test.images[:SCATTER_POINTS])
        model.train(was_training)

    def __call__(self, state: TrainState) -> None:
        self.snapshot(state.model, state.epoch)
        last = state.history[-1]
        print(
            f"  epoch {state.epoch}: val_bpd {last['val_bpd']:.4f}, val_kl {last['val_kl']:.2f}, "
            f"val_mse {last['val_mse']:.4f}, {last['epoch_seconds']:.0f} s",
            flush=True,
        )


def run(config: Config, data: Splits, fixed, snapshots: set[int]) -> tuple[TrainState, Recorder]:
    recorder = Recorder(data, fixed, snapshots)
    if 0 in snapshots:  # the untrained model: fit's own initialisation, same seed, same weights
        torch.manual_seed(config.train.seed)
        recorder.snapshot(build_model(config), 0)
    state = fit(config, data, on_epoch_end=recorder)
    return state, recorder


def knn_purity(z: torch.Tensor, labels: torch.Tensor, k: int = KNN) -> torch.Tensor:
    """Per class, the share of a point's k nearest others (in z) with its own label, (10,)."""
    same = torch.zeros(len(z))
    for start in range(0, len(z), 1000):
        d = torch.cdist(z[start : start + 1000], z)  # (chunk, N)
        d[torch.arange(len(d)), torch.arange(start, start + len(d))] = float("inf")
        nearest = d.topk(k, largest=False).indices  # (chunk, k)
        own = labels[start : start + len(d), None]  # (chunk, 1)
        same[start : start + len(d)] = (labels[nearest] == own).float().mean(1)
    return torch.stack([same[labels == c].mean() for c in range(10)])


def latent_stats(z: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict:
    radius = z.norm(dim=1)
    purity = knn_purity(z, labels)
    order = purity.argsort(descending=True).tolist()
    return {
        "radius_median": radius.median().item(),
        "radius_p99": radius.quantile(0.99).item(),
        "axis_std": z.std(0).tolist(),
        "knn_purity": purity.mean().item(),
        "knn_purity_per_class": {names[c]: purity[c].item() for c in range(10)},
        "best_classes": [names[c] for c in order[:2]],
        "worst_classes": [names[c] for c in order[-3:]],
    }


def _grey_png(path: Path) -> Path:
    """Rewrite an RGB grid of grey images as an 8-bit greyscale PNG (a third of the bytes)."""
    from PIL import Image

    Image.open(path).convert("L").save(path, optimize=True)
    return path


def _palette_png(path: Path) -> Path:
    """Rewrite a matplotlib PNG with a 256-colour palette: looks the same, half the bytes."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )
    return path


def recon_figure(fixed: torch.Tensor, recons: list[torch.Tensor], path: Path) -> Path:
    """One grid: the fixed test images, then their reconstructions after epoch 1, 2, ...,
    with the epoch written left of each row."""
    from PIL import Image, ImageDraw, ImageFont

    rows = [fixed.float() / 255.0, *recons]
    save_grid(torch.cat(rows), path, nrow=len(fixed))
    grid = Image.open(path).convert("L")
    row_h = grid.height / len(rows)
    canvas = Image.new("L", (grid.width + 90, grid.height), 255)
    canvas.paste(grid, (90, 0))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default(size=20)
    for i in range(len(rows)):
        text = "input" if i == 0 else f"epoch {i}"
        draw.text((6, (i + 0.5) * row_h), text, fill=0, font=font, anchor="lm")
    canvas.save(path, optimize=True)
    return path


def _scatter(ax, z: torch.Tensor, labels: torch.Tensor, title: str) -> None:
    ax.scatter(z[:, 0], z[:, 1], c=labels[: len(z)], cmap="tab10", vmin=-0.5, vmax=9.5, s=2)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)


def _legend(fig, names: list[str]) -> None:
    import matplotlib.pyplot as plt

    handles = [
        plt.Line2D([], [], marker="o", ls="", color=plt.cm.tab10(c), label=names[c])
        for c in range(10)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=10, fontsize=8, frameon=False)


def evolution_figure(latents: dict, labels, names: list[str], title: str, path: Path) -> Path:
    """Posterior means of the test images after each chosen epoch, side by side, same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = sorted(latents)
    fig, axes = plt.subplots(1, len(epochs), figsize=(2.6 * len(epochs), 3.2), dpi=90)
    lim = max(latents[e].abs().quantile(0.995).item() for e in epochs) * 1.05
    for ax, epoch in zip(axes, epochs, strict=True):
        _scatter(ax, latents[epoch], labels, "untrained" if epoch == 0 else f"epoch {epoch}")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    fig.suptitle(f"{title}: E[z|x] of {SCATTER_POINTS} test images, latent 2", fontsize=11)
    _legend(fig, names)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, format="png")
    plt.close(fig)
    return _palette_png(path)


def kl_figure(models: dict, latents: dict, labels, names: list[str], path: Path) -> Path:
    """Top: E[z|x] with and without the KL term (own axes; dashed: radius 2 of the prior).
    Bottom: decoder means of 64 draws z ~ N(0, I) from each model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(2, 2, figsize=(9, 9.6), dpi=90)
    with tempfile.TemporaryDirectory() as tmp:
        for col, key in enumerate(("with KL", "without KL")):
            ax = axes[0, col]
            _scatter(ax, latents[key], labels, f"{key}: E[z|x] of test images")
            ax.add_patch(plt.Circle((0, 0), 2.0, fill=False, ls="--", color="k"))
            ax.set_aspect("equal", adjustable="datalim")
            png = sample_grid(models[key], Path(tmp) / f"{col}.png", n=64, seed=0)
            axes[1, col].imshow(Image.open(png))
            axes[1, col].set_title(f"{key}: 64 samples, z ~ N(0, I)", fontsize=10)
            axes[1, col].axis("off")
    _legend(fig, names)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, format="png")
    plt.close(fig)
    return _palette_png(path)


def train_dataset(dataset: str, args, folder: Path) -> tuple[dict, dict]:
    """The seed's runs on one dataset; returns (runs, figures)."""
    from vae_core.viz import manifold_grid

    epochs, limit = (3, QUICK_LIMIT) if args.quick else (20, None)
    snapshots = {0, 1, 2, 3} if args.quick else {0, 1, 2, 5, 10, 20}
    names, title = CLASS_NAMES[dataset], TITLES[dataset]
    config = seed_config(dataset, args.data_root, 5, 1.0, epochs, limit)
    data = load_splits(config)
    labels = data.test.labels
    fixed = data.test.images[first_of_each_class(labels)]
    runs, figures, models, finals = {}, {}, {}, {}
    plan = [("z5", 5, 1.0, fixed, set()), ("z2", 2, 1.0, None, snapshots)]
    if dataset == "mnist":  # the seed's with / without KL figure is of MNIST
        plan.append(("z2-noKL", 2, 0.0, None, {epochs}))
    for key, latent, beta, images, snaps in plan:
        name = f"{dataset}-{key}"
        print(f"{name}: latent {latent}, kl_weight {beta}, {epochs} epochs", flush=True)
        config = seed_config(dataset, args.data_root, latent, beta, epochs, limit)
        state, rec = run(config, data, images, snaps)
        runs[name] = {
            "config": config.to_dict(),
            "epochs": state.history,
            "test": evaluate(state.model, data.test.images, prefix="test_"),
            "latent_stats": {
                e: latent_stats(z, labels[: len(z)], names) for e, z in rec.latents.items()
            },
        }
        if key == "z5":
            figures[f"recon_{dataset}"] = recon_figure(
                fixed, rec.recons, folder / f"{NAME}_recon_{dataset}.png"
            )
        elif key == "z2":
            figures[f"latent_{dataset}"] = evolution_figure(
                rec.latents, labels, names, title, folder / f"{NAME}_latent_{dataset}.png"
            )
            path = manifold_grid(state.model, folder / f"{NAME}_manifold_{dataset}.png", n=12)
            figures[f"manifold_{dataset}"] = _grey_png(path)
        models[key], finals[key] = state.model, rec.latents.get(epochs)
    if "z2-noKL" in models:
        figures[f"kl_{dataset}"] = kl_figure(
            {"with KL": models["z2"], "without KL": models["z2-noKL"]},
            {"with KL": finals["z2"], "without KL": finals["z2-noKL"]},
            labels,
            names,
            folder / f"{NAME}_kl_{dataset}.png",
        )
    return runs, figures


def _row(name: str, r: dict) -> str:
    last, test, cfg = r["epochs"][-1], r["test"], r["config"]
    seconds = sum(e["epoch_seconds"] for e in r["epochs"]) / len(r["epochs"])
    return (
        f"| {name} | {cfg['model']['latent_dim']} | {cfg['train']['kl_weight']:g} "
        f"| {len(r['epochs'])} | {last['val_bpd']:.4f} | {last['val_nelbo']:.1f} "
        f"| {last['val_kl']:.2f} | {last['val_mse']:.4f} | {last['active_units']} "
        f"| {test['test_bpd']:.4f} | {seconds:.0f} |"
    )


def _per_epoch(runs: dict, keys: list[str]) -> list[str]:
    lines = [
        "| epoch | " + " | ".join(f"{k} val_bpd / val_kl / val_mse" for k in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    n = len(runs[keys[0]]["epochs"])
    shown = sorted({1, 2, 3, 5, 10, 15, n} & set(range(1, n + 1)))
    for e in shown:
        cells = []
        for k in keys:
            r = runs[k]["epochs"][e - 1]
            cells.append(f"{r['val_bpd']:.4f} / {r['val_kl']:.2f} / {r['val_mse']:.4f}")
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return lines


def _stats_rows(runs: dict) -> list[str]:
    lines = [
        "| run | epoch | median / 99th pct. radius of E[z\\|x] | 10-NN class purity "
        "| purest classes | least pure |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        for epoch, s in sorted(r["latent_stats"].items()):
            lines.append(
                f"| {name} | {epoch} | {s['radius_median']:.2f} / {s['radius_p99']:.2f} "
                f"| {s['knn_purity']:.3f} | {', '.join(s['best_classes'])} "
                f"| {', '.join(s['worst_classes'])} |"
            )
    return lines


def section(runs: dict, figures: dict, quick: bool, threads: int) -> str:
    rel = {k: os.path.relpath(v, REPO / "docs") for k, v in figures.items()}
    title = "## Seed 003: the MNIST / Fashion-MNIST study (Méndez), redone with vae_core"
    if quick:
        title += " (QUICK CHECK: MNIST, 10,000 images, 3 epochs, not the benchmark)"
    z5 = [k for k in runs if k.endswith("-z5")]
    pictures = []
    for ds in CLASS_NAMES:
        if f"recon_{ds}" in rel:
            pictures += [
                f"**{TITLES[ds]}**, latent 5: the first test image of each class (top row), "
                "then its reconstruction (decoder mean at E[z|x]) after each epoch:",
                "",
                f"![reconstructions per epoch, {TITLES[ds]}]({rel[f'recon_{ds}']})",
                "",
                f"**{TITLES[ds]}**, latent 2: the test images' E[z|x] before training and after "
                "chosen epochs, same axes; then the decoder over a 12 x 12 grid of z at the "
                "N(0, 1) quantiles 0.05 .. 0.95 after the last epoch (the seed's section 3):",
                "",
                f"![latent space evolution, {TITLES[ds]}]({rel[f'latent_{ds}']})",
                "",
                f"![latent manifold, {TITLES[ds]}]({rel[f'manifold_{ds}']})",
                "",
            ]
    pictures += [
        "**MNIST, latent 2, with against without the KL term** (kl_weight 1 and 0, same "
        "everything else): E[z|x] of the test images, each on its own axes, the dashed circle "
        "is radius 2 of the prior; below, decoder means of 64 draws z ~ N(0, I):",
        "",
        f"![with vs without KL]({rel['kl_mnist']})",
    ]
    lines = [
        title,
        "",
        f"`{command()}` at commit {commit()}, on {machine()}, {threads} torch thread(s), on "
        "a machine shared with other jobs (the seconds are not a speed benchmark).",
        "",
        "**Settings.** The seed's text gives latent 5 (reconstructions), latent 2 (latent "
        "space) and 20 epochs; its linked code (mmeendez8/Autoencoder) the rest, used here: "
        "encoder of two 4x4 stride-2 convolutions with 64 filters (arch `conv`, `widths: "
        "[64, 64]`), TF's Glorot-uniform initialisation (`init: xavier`), batch 128, Adam "
        "lr 5e-4, 20 epochs, binary cross-entropy against the [0, 1] grey levels plus the KL "
        "(`likelihood: bernoulli`, `binarize: false`), no gradient clipping, seed 0, CPU.",
        "",
        "**Not as the seed**, because vae_core has no such layers or options: after the two "
        "convolutions the seed has a third 4x4 stride-1 one and dense heads for the mean and a "
        "softplus std; `conv` has a 7x7 convolution to 256 units and a linear head for mean and "
        "log-variance. The seed's decoder is dense 49 -> dense 49 -> 7x7x1 -> three 4x4 "
        "stride-1 transposed convolutions -> dense 784 -> dense 784 + sigmoid; `conv`'s is "
        "linear 256 -> 7x7 transposed convolution -> two 4x4 stride-2 transposed convolutions "
        "(64, 1). The seed trains on all 60,000 training images in a fixed order; here 54,000, "
        "reshuffled each epoch (6,000 held out for val_*). The seed plots one sample z per test "
        "image after the first batch of each epoch; here E[z|x] after the epoch, of the first "
        f"{SCATTER_POINTS} test images. With `binarize: false` val_bpd is a cross-entropy "
        "against grey levels in bits per pixel, not a likelihood; val_nelbo is the seed's loss "
        "(summed cross-entropy + KL per image, nats).",
        "",
        "**Baseline: the seed's own observations** (it prints no numbers): reconstructions "
        "improve with the epochs, and early on 6, 3 and 4 come out as something like a 9 and "
        "Fashion-MNIST's bags as boots; in the 2-D latent space all points start near 0 and "
        "spread by class during training: 0s and 1s get regions of their own while 8s and 3s "
        "share one; shirts, T-shirts and dresses lie together, as do boots, sneakers and "
        "sandals; without the KL term the points cover a much larger region (look at the axes) "
        "and the space has holes, so samples from the prior are poor. The numbers below test "
        "this: the radius of E[z|x] (how far from the prior's bulk the codes go) and the 10-NN "
        "class purity (the share of each test image's 10 nearest codes with its own class).",
        "",
        "| run | latent | kl_weight | epochs | val_bpd | val_nelbo | val_kl | val_mse "
        "| active units | test_bpd | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[_row(name, r) for name, r in runs.items()],
        "",
        *_per_epoch(runs, z5),
        "",
        *_stats_rows({k: r for k, r in runs.items() if r["latent_stats"]}),
        "",
        *pictures,
        "",
        "All numbers per epoch are in `benchmarks/results/seed_study.json`.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data", help="MNIST/ and FashionMNIST/")
    parser.add_argument("--quick", action="store_true", help="MNIST only, 10,000 images, 3 epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Full runs draw into docs/figures; quick checks next to their JSON, never over the real.
    folder = REPO / "benchmarks" / "results" if args.quick else REPO / "docs" / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    runs, figures = {}, {}
    for dataset in ["mnist"] if args.quick else ["mnist", "fashion_mnist"]:
        more_runs, more_figures = train_dataset(dataset, args, folder)
        runs.update(more_runs)
        figures.update(more_figures)
    save_json(
        NAME,
        {
            "mode": "quick" if args.quick else "full",
            "threads": torch.get_num_threads(),
            "figures": {k: str(Path(v).relative_to(REPO)) for k, v in figures.items()},
            "runs": runs,
        },
    )
    write_section(NAME, section(runs, figures, args.quick, torch.get_num_threads()))


if __name__ == "__main__":
    main()
