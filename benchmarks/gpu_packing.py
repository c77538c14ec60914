"""Trials packed on one GPU: the aggregate images/s of k trials sharing it through Ray's
fractional GPUs (`--gpus-per-trial 1/k`, the sweep engine's own path: the dataset resident
on the GPU, bf16 autocast), for k = 1, 2, 4, 8, against one trial alone.

    python benchmarks/gpu_packing.py            # k = 1, 2, 4, 8; 3 epochs of 8,192 images
    python benchmarks/gpu_packing.py --quick    # k = 1, 2; 2 epochs of 2,048 images

The conv 64 px model on the built-in shapes (3 x 64 x 64, like CelebA at 64 px), batch 128.
Each k is one sweep of k identical trials (random search, FIFO, every trial running at once).
A trial's images/s = its training images x its epochs after the first (kernels, caches and
autotuning warm up in the first) / the seconds of those epochs (validation included); the
aggregate is their sum, taken only when every trial ran at the same time.

Without a CUDA GPU it runs the same sweeps on the CPU cores instead (k = 1, 2 with
`--cpus-per-trial 2/k`) to check the path, and says so: those figures are not the GPU's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import ray
import torch
from _report import command, commit, machine, save_json, trial_results, write_section

from sweeps.engine import run_sweep
from sweeps.spec import parse_spec

SPACE = {"latent_dim": 32, "kl_weight": 1.0}  # k identical trials
BASE = {"dataset": "shapes", "arch": "conv", "batch_size": 128, "iwae_samples": 4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="k = 1, 2; 2 epochs of 2,048")
    parser.add_argument("--images", type=int, default=8192, help="shapes images (default 8192)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    packs = [1, 2] if args.quick or not gpu else [1, 2, 4, 8]
    images, epochs = (2048, 2) if args.quick else (args.images, args.epochs)
    cores = os.cpu_count() or 1
    base = {**BASE, "limit": images}
    results = {}
    with tempfile.TemporaryDirectory(prefix="packing-") as tmp:
        folder = Path(tmp)
        os.environ["VAE_CACHE_DIR"] = str(folder / "cache")
        for k in packs:
            flags = ["--num-samples", str(k), "--max-concurrent", str(k), "--name", f"k{k}"]
            flags += ["--max-epochs", str(epochs), "--search", "random", "--scheduler", "fifo"]
            flags += ["--storage-path", str(folder / "ray"), "--registry-name", f"packing-{k}"]
            flags += ["--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]
            if gpu:
                flags += [
                    "--gpus-per-trial",
                    str(1 / k),
                    "--cpus-per-trial",
                    str(max(1, cores // k)),
                ]
            else:
                flags += ["--gpus-per-trial", "0", "--cpus-per-trial", str(cores / k)]
            run_sweep(parse_spec(SPACE, base, flags))
            ray.shutdown()
            results[k] = measure(folder / "ray" / f"k{k}")
    alone = results[1]["aggregate_images_per_s"]
    for r in results.values():
        r["vs_one_alone"] = r["aggregate_images_per_s"] / alone if alone else None
    device = torch.cuda.get_device_name(0) if gpu else f"CPU ({cores} cores): no CUDA GPU"
    figures = {"device": device, "gpu": gpu, "images": images, "epochs": epochs}
    figures["packs"] = {str(k): r for k, r in results.items()}
    save_json("gpu_packing", figures)
    write_section("gpu_packing", report(figures))


def measure(path: Path) -> dict:
    """Per trial: images/s over its epochs after the first; whether all ran at once."""
    per_trial, spans = [], []
    for _, results in trial_results(path):
        n_train = results[-1]["train_images"]
        warm = results[1:] or results  # one epoch only: it counts, warm-up and all
        per_trial.append(n_train * len(warm) / sum(r["epoch_seconds"] for r in warm))
        spans.append((results[0]["entered_at"], results[-1]["reported_at"]))
    together = max(start for start, _ in spans) < min(end for _, end in spans)
    return {
        "trials": len(per_trial),
        "images_per_s": per_trial,
        "aggregate_images_per_s": sum(per_trial) if together else None,
        "all_at_once": together,
    }


def report(f: dict) -> str:
    rows = []
    for k, r in f["packs"].items():
        each = ", ".join(f"{v:,.0f}" for v in r["images_per_s"])
        total = r["aggregate_images_per_s"]
        shown = f"{total:,.0f}" if total else "not all at once"
        ratio = f"**{r['vs_one_alone']:.2f}x**" if r["vs_one_alone"] else "-"
        rows.append(f"| {k} | {each} | {shown} | {ratio} |")
    where = (
        f"on the GPU ({f['device']}), `--gpus-per-trial 1/k`, dataset resident, bf16 autocast"
        if f["gpu"]
        else f"**on the CPU, not a GPU**: {f['device']} visible, so the same sweeps ran with "
        "`--cpus-per-trial 2/k` to check the path; the GPU figures come from a run on a GPU"
    )
    return f"""
## Trials packed on one device: aggregate images/s against one trial alone

`{command()}` at commit {commit()} on {machine()}; {where}. The conv 64 px model on
{f["images"]:,} shapes images (3 x 64 x 64), batch 128, {f["epochs"]} epochs; k identical trials
in one sweep, all at once; a trial's images/s over its epochs after the first (validation
included).

| trials packed (k) | images/s of each trial | aggregate images/s | vs one trial alone |
|---|---|---|---|
{chr(10).join(rows)}
"""


if __name__ == "__main__":
    main()
