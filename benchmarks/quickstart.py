"""Does the laptop quick start visibly work? `python sweeps/shapes.py` as a new user runs it
(its defaults, a fresh store, a local Ray), then a shape classifier trained on the generated
images reads the champion's reconstructions of the test split.

    python benchmarks/quickstart.py                 # the quick start as README gives it
    python benchmarks/quickstart.py -- --num-samples 4 --max-epochs 2   # flags to shapes.py

Baseline, same session: the classifier on the original test images (its ceiling). Target: it
recognises at least 90% of the champion's reconstructions, within about ten minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch
from _report import REPO, save_json, timed_run, write_section
from torch import nn

from vae_core import Config, load_splits
from vae_core.data.shapes import SHAPE_NAMES
from vae_core.metrics import index_batches

TARGET = 0.90
FIGURE = REPO / "docs" / "images" / "quickstart_reconstructions.png"


def classifier(channels: int, size: int) -> nn.Module:
    """A small CNN: four stride-2 convolutions, then a linear layer over the shapes."""
    layers, width = [], channels
    for out in (16, 32, 64, 64):
        layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), nn.ReLU()]
        width = out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * (size // 16) ** 2, 4))


def train_classifier(images: torch.Tensor, shapes: torch.Tensor, epochs: int) -> nn.Module:
    """Adam on the training split's images (uint8) and shape labels, fixed seed."""
    torch.manual_seed(0)
    net = classifier(images.shape[1], images.shape[-1])
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in index_batches(len(images), 128):
            index = torch.randperm(len(images), generator=order)[: batch.stop - batch.start]
            loss = nn.functional.cross_entropy(net(images[index].float() / 255), shapes[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, shapes: torch.Tensor) -> tuple[float, list]:
    """Share of `images` (float [0, 1] or uint8) classified as their shape; per-shape shares."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images
    predicted = torch.cat([net(x[b]).argmax(1) for b in index_batches(len(x), 500)])
    right = predicted == shapes
    per_shape = [right[shapes == s].float().mean().item() for s in range(len(SHAPE_NAMES))]
    return right.float().mean().item(), per_shape


@torch.no_grad()
def reconstruct(model, images: torch.Tensor) -> torch.Tensor:
    """The decoder's mean at the posterior mean, in [0, 1]."""
    out = []
    for b in index_batches(len(images), 500):
        x = model.coding.encode(images[b], dequantize=False)
        out.append(model.coding.to_unit(model.decode(model.encode(x).mode()).mean))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--classifier-epochs", type=int, default=20)
    parser.add_argument("flags", nargs="*", help="after --: flags for sweeps/shapes.py")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    with tempfile.TemporaryDirectory() as folder:
        shapes = [sys.executable, str(REPO / "sweeps" / "shapes.py"), *args.flags]
        done, sweep_seconds = timed_run(shapes, "the quick start", cwd=folder)
        summary = done.stdout[done.stdout.rfind("vae-sweep: sweep") :].strip()
        from sweeps.registry import load_model

        uri = f"sqlite:///{folder}/mlflow.db"
        name = next(line.split()[1] for line in summary.splitlines() if "registered" in line)
        model = load_model(f"{name}@champion", tracking_uri=uri)
    config = Config.from_dict({"dataset": "shapes", "image_size": model.image_shape[-1]})
    data = load_splits(config, progress=False)
    train_shapes, test_shapes = data.train.factors["shape"], data.test.factors["shape"]
    started = time.monotonic()
    net = train_classifier(data.train.images, train_shapes, args.classifier_epochs)
    classifier_seconds = time.monotonic() - started
    originals, original_per_shape = accuracy(net, data.test.images, test_shapes)
    reconstructions = reconstruct(model, data.test.images)
    recons, recon_per_shape = accuracy(net, reconstructions, test_shapes)
    picture(data.test.images, reconstructions, test_shapes)
    figures = {
        "sweep_seconds": sweep_seconds,
        "classifier_seconds": classifier_seconds,
        "original_accuracy": originals,
        "reconstruction_accuracy": recons,
        "ratio": recons / originals,
        "per_shape": dict(zip(SHAPE_NAMES, recon_per_shape, strict=True)),
        "original_per_shape": dict(zip(SHAPE_NAMES, original_per_shape, strict=True)),
        "flags": args.flags,
        "summary": summary,
        "target": TARGET,
        "met": recons >= TARGET,
    }
    saved = save_json("quickstart", figures)
    write_section("quickstart", report(json.loads(saved.read_text())))


def picture(images: torch.Tensor, reconstructions: torch.Tensor, shapes: torch.Tensor) -> None:
    """The first 8 test images of each shape, each row followed by its reconstructions."""
    from vae_core.viz import save_grid

    rows = []
    for s in range(len(SHAPE_NAMES)):
        first = (shapes == s).nonzero().flatten()[:8]
        rows += [images[first].float() / 255, reconstructions[first]]
    FIGURE.parent.mkdir(exist_ok=True)
    save_grid(torch.cat(rows), FIGURE, nrow=8)


def report(f: dict) -> str:
    flags = f"`python sweeps/shapes.py {' '.join(f['flags'])}`".replace(" `", "`")
    if not f["flags"]:
        flags += " (its defaults)"
    shapes = ", ".join(f"{k} {v:.0%}" for k, v in f["per_shape"].items())
    verdict = "met" if f["met"] else "missed"
    return f"""## Quick start: the champion's reconstructions, recognised

`{f["command"]}` at commit {f["commit"]}, on {f["machine"]}.
{flags} in a fresh folder (local Ray, SQLite store), then a small CNN
trained {f["classifier_seconds"]:.0f} s on the generated training images classifies the shapes
of the 2,000 test images and of the champion's reconstructions of them (decoder mean at the
posterior mean).

| | recognised |
|---|---|
| original test images (baseline: the classifier's ceiling) | {f["original_accuracy"]:.1%} |
| the champion's reconstructions | **{f["reconstruction_accuracy"]:.1%}** ({shapes}) |
| ratio | {f["ratio"]:.3f} |

![test images (odd rows) and the champion's reconstructions (even rows)](images/{FIGURE.name})

Target: at least {f["target"]:.0%} of the reconstructions recognised: **{verdict}**.
The quick start took {f["sweep_seconds"] / 60:.1f} min. Its summary:

```
{f["summary"]}
```
"""


if __name__ == "__main__":
    main()
