"""Images per second of one training epoch of the conv 64 px VAE through vae_core (the prepared
Arrow file, memory-mapped, stepped by the trainer's own epoch loop) against (a) the PyTorch
CelebA notebook's way (ImageFolder + Resize((64, 64)) + ToTensor + Normalize through a
DataLoader, `.to(device)` per batch) and (b) the limit: the same steps on one batch already on
the device, as float, nothing else.

    python benchmarks/trainer_speed.py            # 6,000 generated JPEGs, median of 5 passes
    python benchmarks/trainer_speed.py --quick    # 1,500 JPEGs, 3 passes: a check

Training pass only: no validation, no checkpoints. The three run in one process, alternated in a
rotating order, each pass from the same initial weights; the full run first waits (up to
--wait-minutes) for the machine's load to settle. With a CUDA GPU visible it also times one
trial on it (dataset resident on the GPU, bf16 autocast). Writes docs/BENCHMARKS.md and
benchmarks/results/trainer_speed.json.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _report import command, commit, machine, save_json, write_section

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fakes import make_celeba_folder  # noqa: E402  (tests/ holds the fake CelebA maker)

from vae_core.config import Config  # noqa: E402
from vae_core.data import Splits, shuffled_batches, splits_from_file  # noqa: E402
from vae_core.data.arrow import open_prepared  # noqa: E402
from vae_core.data.cache import CACHE_ENV, prepared_file  # noqa: E402
from vae_core.metrics import elbo_terms, training_loss  # noqa: E402
from vae_core.model import VAE  # noqa: E402
from vae_core.trainer import _new_state, _on_device_if_it_fits, _train_epoch  # noqa: E402

NAME = "trainer_speed"
NOTEBOOK_BATCH = 32  # get_celeba(32, path_to_folder) in the notebook
NOTEBOOK_WORKERS = 0  # its DataLoader leaves num_workers at the default
QUIET_LOAD = 0.7  # 1-minute load average under which the machine counts as quiet
TARGET_VS_NOTEBOOK = 1.5
TARGET_OVERHEAD = 0.10  # data and bookkeeping under a tenth of a step


def bench_config(data_root: Path, device: str) -> Config:
    """The notebook's model and batch; the trainer's defaults otherwise. crop none and the
    signed range are the notebook's Resize((64, 64)) and Normalize to [-1, 1]."""
    return Config.from_dict(
        {
            "dataset": "celeba",
            "data_root": str(data_root),
            "arch": "conv",
            "image_size": 64,
            "crop": "none",
            "pixel_range": "signed",
            "batch_size": NOTEBOOK_BATCH,
            "device": device,
        }
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    config: Config,
    generator: torch.Generator,
) -> torch.Tensor:
    """One optimiser step as the trainer takes it: vae_core's loss (bf16 autocast on a GPU
    when train.amp), the config's gradient clip, Adam. x: (B, C, H, W) float on the device."""
    train = config.train
    amp = train.amp and x.device.type == "cuda"
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        log_px, kl = elbo_terms(model, x, generator)
    loss = training_loss(log_px, kl, train.kl_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip = train.grad_clip if train.grad_clip is not None else math.inf
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss


def vae_core_epoch(config: Config, images: torch.Tensor, device: torch.device) -> float:
    """Seconds of vae_core.trainer._train_epoch (what `fit` runs per epoch before validating)."""
    state = _new_state(config, device)
    sync(device)
    start = time.perf_counter()
    _train_epoch(state, images, device, None)
    sync(device)
    return time.perf_counter() - start


def notebook_loader(data_root: Path, train_files: set[str], workers: int):
    """The notebook's get_celeba(): ImageFolder over <root>/celeba, its transforms, a
    SubsetRandomSampler; over the files of vae_core's training split, so both epochs see the
    same images."""
    from torch.utils.data import DataLoader, SubsetRandomSampler
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize((64, 64)),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )
    dataset = datasets.ImageFolder(str(data_root / "celeba"), transform)
    rows = [i for i, (path, _) in enumerate(dataset.samples) if Path(path).name in train_files]
    sampler = SubsetRandomSampler(rows)
    return DataLoader(dataset, batch_size=NOTEBOOK_BATCH, sampler=sampler, num_workers=workers)


def notebook_epoch(config: Config, loader, device: torch.device) -> float:
    """Seconds of the notebook's trainloop body over one epoch (no torch.save every 10 batches),
    each step the trainer's; worker start-up counts, as in every epoch of the notebook."""
    state = _new_state(config, device)
    state.model.train()
    total = 0.0
    sync(device)
    start = time.perf_counter()
    for images, _ in loader:  # (B, 3, 64, 64) float in [-1, 1], decoded image by image
        x = images.to(device)
        total += step(state.model, state.optimizer, x, config, state.noise_rng).item()
    sync(device)
    assert math.isfinite(total)
    return time.perf_counter() - start


def limit_epoch(config: Config, x: torch.Tensor, sizes: list[int], device: torch.device) -> float:
    """Seconds of the same number of steps, of the same sizes, on one float batch x already on
    the device: the model's compute and nothing else."""
    state = _new_state(config, device)
    state.model.train()
    sync(device)
    start = time.perf_counter()
    for size in sizes:
        step(state.model, state.optimizer, x[:size], config, state.noise_rng)
    sync(device)
    return time.perf_counter() - start


def arrow_data_seconds(config: Config, model: VAE, images: torch.Tensor, device: torch.device):
    """Seconds of the trainer's per-batch data work alone for one epoch: gather the shuffled
    uint8 rows, move them, dequantise into float (the first two lines of its loop)."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.Generator(device).manual_seed(1)
    sync(device)
    start = time.perf_counter()
    for index in shuffled_batches(len(images), config.train.batch_size, generator):
        batch = images.index_select(0, index.to(images.device))
        x = model.coding.encode(batch.to(device, non_blocking=True), noise)
    sync(device)
    assert x.dtype == torch.float32
    return time.perf_counter() - start


def one_batch(config: Config, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    model = _new_state(config, device).model
    batch = images[: config.train.batch_size].to(device)
    return model.coding.encode(batch, torch.Generator(device).manual_seed(0))  # float, on device


def run_rounds(
    pipelines: dict[str, Callable[[], float]], passes: int, loads: list[float]
) -> dict[str, list[float]]:
    """`passes` rounds; each runs every pipeline once, the order rotated round by round, so
    background load falls on all of them alike. Appends the load average after each pass."""
    names, seconds = list(pipelines), {name: [] for name in pipelines}
    for r in range(passes):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds[name].append(pipelines[name]())
            loads.append(round(os.getloadavg()[0], 2))
            print(f"pass {r + 1}/{passes} {name}: {seconds[name][-1]:.2f} s (load {loads[-1]})")
    return seconds


def wait_for_quiet(max_minutes: float, poll_s: float = 30, quiet_s: float = 60) -> dict:
    """Poll the 1-minute load average until it stayed under QUIET_LOAD for `quiet_s`, or
    `max_minutes` passed. Returns what happened (the run goes ahead either way)."""
    start = time.monotonic()
    quiet_since, readings = None, []
    while True:
        load, now = os.getloadavg()[0], time.monotonic()
        readings.append(round(load, 2))
        quiet_since = (quiet_since or now) if load < QUIET_LOAD else None
        if quiet_since is not None and now - quiet_since >= quiet_s:
            return {"quiet": True, "waited_s": now - start, "load": load}
        if now - start >= max_minutes * 60:
            return {"quiet": False, "waited_s": now - start, "load": load, "readings": readings}
        print(f"load {load:.2f}; waiting for < {QUIET_LOAD} for {quiet_s:.0f} s", flush=True)
        time.sleep(poll_s)


def gpu_trial(config: Config, splits: Splits, passes: int) -> dict:
    """One trial on the GPU: the dataset resident there (as `fit` puts it when it fits), bf16
    autocast (train.amp), images/s of the trainer's epoch against the same steps on one batch."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU visible (torch.cuda.is_available() is False)"}
    config = config.replace(device="cuda", amp=True)
    device = torch.device("cuda")
    images = _on_device_if_it_fits(splits.train.images, device)
    sizes = [len(i) for i in shuffled_batches(len(images), NOTEBOOK_BATCH, torch.Generator())]
    x = one_batch(config, images, device)
    limit_epoch(config, x, sizes[:20], device)  # CUDA context, kernels, autocast caches
    seconds = run_rounds(
        {
            "vae_core": lambda: vae_core_epoch(config, images, device),
            "limit": lambda: limit_epoch(config, x, sizes, device),
        },
        max(passes, 5),
        [],
    )
    best = {name: min(s) for name, s in seconds.items()}
    return {
        "device": torch.cuda.get_device_name(0),
        "resident_on_gpu": images.is_cuda,
        "amp": "bf16",
        "seconds": seconds,
        "images_per_s": {name: len(images) / s for name, s in best.items()},
        "vs_limit": best["limit"] / best["vae_core"],
    }


def prepare(work: Path, n_images: int) -> tuple[Config, Splits, set[str], float]:
    """The JPEG folder and its Arrow file, made by vae_core's own prepare into a cache at
    $VAE_CACHE_DIR = <work>/cache; returns the config, its splits and the training files."""
    src = work / "src"
    if not (src / "celeba" / "img_align_celeba").is_dir():
        print(f"writing {n_images:,} JPEGs under {src}", flush=True)
        make_celeba_folder(src, n_images, partition=True, corrupt=0, grayscale=0)
    os.environ[CACHE_ENV] = str(work / "cache")
    config = bench_config(src, "cpu")
    start = time.perf_counter()
    prepared = open_prepared(prepared_file(config, progress=False))
    prepare_s = time.perf_counter() - start
    splits = splits_from_file(prepared, config)
    first, _ = prepared.split_range("train")
    files = prepared.column("file")[first : first + len(splits.train)]
    return config, splits, {Path(f).name for f in files}, prepare_s


def measure_cpu(
    config: Config, splits: Splits, train_files: set[str], src: Path, passes: int
) -> tuple[dict[str, list[float]], float, int, list[float]]:
    """Per-pass seconds of the four CPU pipelines, vae_core's data work alone, the steps in
    an epoch, and the load average after each pass."""
    device = torch.device("cpu")
    images = _on_device_if_it_fits(splits.train.images, device)  # the memory map, on CPU
    sizes = [len(i) for i in shuffled_batches(len(images), NOTEBOOK_BATCH, torch.Generator())]
    x = one_batch(config, images, device)
    limit_epoch(config, x, sizes[:10], device)  # warm-up: oneDNN kernels, allocator
    workers = 2
    loaders = {w: notebook_loader(src, train_files, w) for w in (NOTEBOOK_WORKERS, workers)}
    assert len(loaders[0].sampler) == len(images)
    pipelines = {
        f"notebook, {NOTEBOOK_WORKERS} workers": lambda: notebook_epoch(
            config, loaders[0], device
        ),
        f"notebook, {workers} workers": lambda: notebook_epoch(config, loaders[workers], device),
        "vae_core": lambda: vae_core_epoch(config, images, device),
        "limit": lambda: limit_epoch(config, x, sizes, device),
    }
    loads = [round(os.getloadavg()[0], 2)]
    seconds = run_rounds(pipelines, passes, loads)
    model = _new_state(config, device).model
    data_s = min(arrow_data_seconds(config, model, images, device) for _ in range(3))
    return seconds, data_s, len(sizes), loads


def labels() -> dict[str, str]:
    return {
        f"notebook, {NOTEBOOK_WORKERS} workers": "(a) notebook: ImageFolder + DataLoader, "
        f"{NOTEBOOK_WORKERS} workers (its own)",
        "notebook, 2 workers": "(a') notebook, 2 workers",
        "vae_core": "**vae_core**: Arrow memory map + `_train_epoch`",
        "limit": "(b) limit: one float batch on the device",
    }


def spread(values: list[float]) -> float:
    """(max - min) / min of one pipeline's passes: how much the machine moved them."""
    return (max(values) - min(values)) / min(values)


def paired_overhead(seconds: dict[str, list[float]]) -> float:
    """Median over rounds of vae_core / limit - 1, each pair run back to back in one round."""
    pairs = zip(seconds["vae_core"], seconds["limit"], strict=True)
    return statistics.median(ours / limit - 1 for ours, limit in pairs)


def verdicts(best: dict[str, float], median: dict[str, float]) -> list[str]:
    """The two targets, judged on the best passes, the medians quoted beside."""
    key = f"notebook, {NOTEBOOK_WORKERS} workers"
    speedup, speedup_med = best[key] / best["vae_core"], median[key] / median["vae_core"]
    over = best["vae_core"] / best["limit"] - 1
    over_med = median["vae_core"] / median["limit"] - 1
    met_a = speedup >= TARGET_VS_NOTEBOOK
    met_b = over < TARGET_OVERHEAD
    return [
        f"Target 1, vae_core >= {TARGET_VS_NOTEBOOK}x the notebook on CPU: **{speedup:.2f}x** "
        f"(medians: {speedup_med:.2f}x), "
        + (
            "met." if met_a else f"missed: it would need {TARGET_VS_NOTEBOOK / speedup:.2f}x more."
        ),
        f"Target 2, within 10% of the limit (data and bookkeeping under a tenth of a step): "
        f"vae_core's epoch takes **{over * 100:+.1f}%** over the limit's (medians: "
        f"{over_med * 100:+.1f}%), "
        + ("met." if met_b else f"missed by {(over - 0.1) * 100:.1f} points."),
    ]


def explain(seconds: dict[str, list[float]], data_s: float) -> str:
    """What limits the figures, from the measurements rather than assumed."""
    best = {name: min(s) for name, s in seconds.items()}
    notebook = best[f"notebook, {NOTEBOOK_WORKERS} workers"]
    ours, limit = best["vae_core"], best["limit"]
    residual = (ours - limit - data_s) / limit
    noise = max(spread(seconds["vae_core"]), spread(seconds["limit"]))
    rest = (
        f"within the run-to-run noise: passes of one pipeline differ by up to {noise * 100:.0f}%"
        if abs(residual) <= noise
        else f"larger than the run-to-run noise ({noise * 100:.0f}%): bookkeeping"
    )
    return " ".join(
        [
            f"The model's compute (the limit) is {limit / notebook * 100:.0f}% of the notebook's "
            f"epoch: on this CPU no input pipeline can beat the notebook by more than "
            f"notebook / limit = {notebook / limit:.2f}x.",
            f"vae_core's own data work (gather + dequantise, timed alone) is "
            f"{data_s / limit * 100:.1f}% of a step; the other {residual * 100:+.1f} points are "
            f"{rest}.",
            f"Two DataLoader workers take {best['notebook, 2 workers'] / notebook:.2f}x the "
            f"{NOTEBOOK_WORKERS}-worker epoch's time: their JPEG decoding runs beside the model, "
            "on the same cores.",
        ]
    )


def gpu_line(gpu: dict) -> str:
    if "skipped" in gpu:
        return f"GPU: skipped, {gpu['skipped']}; the code path (`gpu_trial`) runs when one is."
    rate = gpu["images_per_s"]
    return (
        f"GPU ({gpu['device']}, bf16 autocast, dataset resident on the GPU: "
        f"{gpu['resident_on_gpu']}): vae_core {rate['vae_core']:,.0f} images/s, limit "
        f"{rate['limit']:,.0f} images/s ({gpu['vs_limit']:.2f}x of the limit; best passes)."
    )


def section(r: dict, quick: bool) -> str:
    n, steps, best, median = r["n_train"], r["steps"], r["best_s"], r["median_s"]
    m, t = r["config"]["model"], r["config"]["train"]
    notebook, limit = best[f"notebook, {NOTEBOOK_WORKERS} workers"], best["limit"]
    rows = [
        f"| {label} | {n / best[name]:,.0f} | {best[name]:.1f} | {median[name]:.1f} "
        f"| {notebook / best[name]:.2f}x | {limit / best[name]:.2f}x |"
        for name, label in labels().items()
    ]
    ms = {name: 1000 * s / steps for name, s in best.items()}
    title = f"## Trainer speed: conv 64 px, batch {NOTEBOOK_BATCH}, one training epoch on CPU"
    if quick:
        title += " (QUICK CHECK: --quick, not the benchmark)"
    wait = r["wait"]
    load_line = (
        f"Started after the 1-minute load average stayed under {QUIET_LOAD} for a minute "
        f"(waited {wait['waited_s'] / 60:.0f} min)."
        if wait.get("quiet")
        else f"**The machine was not quiet**: 1-minute load average {wait['load']:.2f} at the "
        f"start (after waiting {wait['waited_s'] / 60:.0f} min for < {QUIET_LOAD})."
    )
    lines = [
        title,
        "",
        f"`{r['command']}` at commit {r['commit']}, on {r['machine']}, {r['threads']} torch "
        f"threads. {load_line} 1-minute load average during the run: {min(r['loads']):.2f} "
        f"to {max(r['loads']):.2f} (this process alone makes about {r['threads']}).",
        "",
        f"Training pass only (no validation, no checkpoints): {n:,} training images of "
        f"{r['n_images']:,} generated 178x218 JPEGs (tests/fakes.py, a CelebA-like 80/10/10 "
        f"split), {steps} steps of batch {NOTEBOOK_BATCH} (the notebook's). Model: `Config` "
        f"celeba, arch conv, 64 px, latent {m['latent_dim']}, {m['likelihood']} sigma_x "
        f"{m['sigma_x']}, Adam {t['lr']:g}, gradient clip {t['grad_clip']:g} (defaults); crop "
        "none and pixels in [-1, 1], as the notebook's Resize((64, 64)) and Normalize. "
        "**vae_core**: the Arrow file from vae_core's own prepare, memory-mapped, stepped by "
        "`vae_core.trainer._train_epoch` (the loop `fit` runs each epoch). **(a)**: the "
        "notebook's ImageFolder + Resize + ToTensor + Normalize, SubsetRandomSampler over the "
        "same training files, DataLoader, `.to(device)` per batch, the same step (vae_core's "
        "`elbo_terms` / `training_loss`, clip, Adam) and its `loss.item()`; not its "
        "`torch.save` every 10 batches. **(b)**: the same steps on one batch already on the "
        f"device as float. {r['passes']} passes per pipeline, alternated in a rotating order, "
        "each from the same initial weights. The figures are each pipeline's best pass (other "
        "work on the machine only ever adds time, as timeit's documentation notes); the "
        "median is beside it and every pass is in benchmarks/results/trainer_speed.json.",
        "",
        "| pipeline | images/s | epoch (s) | median epoch (s) | vs notebook | vs limit |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"- Per step: limit {ms['limit']:.0f} ms (forward, backward, clip, Adam), vae_core "
        f"{ms['vae_core']:.0f} ms, notebook {ms[f'notebook, {NOTEBOOK_WORKERS} workers']:.0f} "
        f"ms ({NOTEBOOK_WORKERS} workers) / {ms['notebook, 2 workers']:.0f} ms (2 workers). "
        f"The trainer's own data work (gather the shuffled uint8 rows, dequantise to float), "
        f"timed alone: {1000 * r['arrow_data_s'] / steps:.1f} ms a step.",
        *[f"- {line}" for line in verdicts(best, median)],
        f"- {r['why']}",
        f"- {gpu_line(r['gpu'])}",
        f"- One-off prepare (decode {r['n_images']:,} JPEGs into the Arrow file, all splits): "
        f"{r['prepare_s']:.1f} s, paid once per dataset, not per trial or epoch.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,500 images, 3 passes, no wait")
    parser.add_argument("--images", type=int, help="JPEGs to generate (default 6,000)")
    parser.add_argument("--passes", type=int, help="passes per pipeline (default 5)")
    parser.add_argument("--wait-minutes", type=float, help="most to wait for a quiet machine")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder")
    args = parser.parse_args()
    n_images = args.images or (1_500 if args.quick else 6_000)
    passes = args.passes or (3 if args.quick else 5)
    wait_minutes = 0 if args.quick else 40
    if args.wait_minutes is not None:
        wait_minutes = args.wait_minutes
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="vae-trainer-speed-"))
    config, splits, train_files, prepare_s = prepare(work, n_images)
    wait = wait_for_quiet(wait_minutes)
    seconds, data_s, steps, loads = measure_cpu(config, splits, train_files, work / "src", passes)
    best = {name: min(s) for name, s in seconds.items()}
    n_train = len(splits.train)
    result = {
        "mode": "quick" if args.quick else "full",
        "n_images": n_images,
        "n_train": n_train,
        "batch_size": NOTEBOOK_BATCH,
        "steps": steps,
        "threads": threads,
        "passes": passes,
        "wait": wait,
        "loads": loads,
        "prepare_s": prepare_s,
        "config": config.to_dict(),
        "seconds": seconds,  # every pass, in the order each pipeline ran
        "best_s": best,
        "median_s": {name: statistics.median(s) for name, s in seconds.items()},
        "images_per_s": {name: n_train / s for name, s in best.items()},
        "vs_notebook": best[f"notebook, {NOTEBOOK_WORKERS} workers"] / best["vae_core"],
        "vs_limit": best["limit"] / best["vae_core"],
        "paired_overhead": paired_overhead(seconds),
        "arrow_data_s": data_s,
        "why": explain(seconds, data_s),
        "gpu": gpu_trial(config, splits, passes),
    }
    save_json(NAME, result)
    report = {**result, "commit": commit(), "machine": machine(), "command": command()}
    write_section(NAME, section(report, args.quick))


if __name__ == "__main__":
    main()
