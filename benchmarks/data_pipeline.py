"""Reading training batches from the prepared Arrow file against decoding the JPEG folder every
epoch the way the PyTorch CelebA notebook does (ImageFolder + Resize((64, 64)) + ToTensor +
Normalize through a DataLoader), on a generated folder of 178x218 JPEGs.

    python benchmarks/data_pipeline.py --images 10000

Measures, in one session: images per second of one epoch each way (same batch size), the
one-off prepare, a trial's time to its first batch (fresh process each way), and the resident
memory of two trials reading the same file at once. Writes docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
from _report import command, commit, machine, save_json, write_section

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fakes import make_celeba_folder  # noqa: E402  (tests/ holds the fake CelebA maker)

from vae_core.config import Config  # noqa: E402
from vae_core.data import load_splits, shuffled_batches  # noqa: E402
from vae_core.data.arrow import write_plan  # noqa: E402
from vae_core.data.cache import make_plan  # noqa: E402
from vae_core.likelihoods import PixelCoding  # noqa: E402

BATCH = 128


def arrow_epochs(config: Config) -> tuple[float, float, int]:
    """Seconds of one epoch of shuffled uint8 batches from the memory-mapped file (what the
    trainer moves to its device), and of one that also makes dequantised float on the CPU."""
    images = load_splits(config, progress=False).train.images
    coding, g = PixelCoding("gaussian", "signed"), torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for index in shuffled_batches(len(images), BATCH, g):
        batch = images.index_select(0, index)  # (B, 3, 64, 64) uint8
    uint8_s = time.perf_counter() - start
    start = time.perf_counter()
    for index in shuffled_batches(len(images), BATCH, g):
        x = coding.encode(images.index_select(0, index), g)  # (B, 3, 64, 64) in [-1, 1]
    assert batch.dtype == torch.uint8 and x.dtype == torch.float32
    return uint8_s, time.perf_counter() - start, len(images)


def notebook_loader(root: Path, workers: int):
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [  # the notebook's get_celeba()
            transforms.Resize((64, 64)),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )
    dataset = datasets.ImageFolder(str(root / "celeba"), transform)
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)


def notebook_epoch(root: Path, workers: int) -> tuple[float, int]:
    loader = notebook_loader(root, workers)
    start, n = time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    return time.perf_counter() - start, n


FIRST_BATCH = textwrap.dedent("""
    import sys, time
    start = time.perf_counter()
    kind, target = sys.argv[1], sys.argv[2]
    if kind == "arrow":
        import torch
        from vae_core.config import Config
        from vae_core.data import load_splits
        config = Config.from_dict({"dataset": "celeba", "data_path": target, "arch": "conv"})
        images = load_splits(config, progress=False).train.images
        x = images[torch.randperm(len(images))[:128]].float()
    else:
        sys.path.insert(0, sys.argv[3])
        from data_pipeline import notebook_loader
        from pathlib import Path
        x, _ = next(iter(notebook_loader(Path(target), 0)))
    print(time.perf_counter() - start)
""")


def first_batch_seconds(kind: str, target: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", FIRST_BATCH, kind, str(target), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return float(out.stdout.strip().splitlines()[-1])


TRIAL = textwrap.dedent("""
    import json, sys, time, torch
    from vae_core.config import Config
    from vae_core.data import load_splits, shuffled_batches
    config = Config.from_dict({"dataset": "celeba", "data_path": sys.argv[1], "arch": "conv"})
    images = load_splits(config, progress=False).train.images
    for _ in range(2):  # two epochs: every page of the file is touched
        for index in shuffled_batches(len(images), 128, torch.Generator().manual_seed(0)):
            x = images.index_select(0, index).float()
    # /proc/self/smaps: the memory of the mapping of this very file, and of the whole process
    stats, current = {"Rss": 0, "Pss": 0, "Shared_Clean": 0}, None
    for line in open("/proc/self/smaps"):
        parts = line.split()
        if "-" in parts[0] and len(parts) >= 5:  # a mapping's header line
            current = parts[5] if len(parts) > 5 else ""
        elif current == sys.argv[1] and parts[0].rstrip(":") in stats:
            stats[parts[0].rstrip(":")] += int(parts[1]) * 1024
    rss = int(open("/proc/self/statm").read().split()[1]) * 4096
    print(json.dumps({"file": stats, "process_rss": rss}), flush=True)
    time.sleep(float(sys.argv[2]))  # stay alive while the other trial measures
""")


def two_trials(path: Path) -> list[dict[str, int]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TRIAL, str(path.resolve()), "8"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [json.loads(p.stdout.readline()) for p in procs]  # both still alive here
    for p in procs:
        p.wait(timeout=60)
    return results


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vae-bench-"))
    folder = work / "src"
    if not (folder / "celeba" / "img_align_celeba").is_dir():
        print(f"writing {args.images} JPEGs under {folder}", flush=True)
        make_celeba_folder(folder, args.images, partition=False, corrupt=0, grayscale=0)
    config = Config.from_dict(
        {
            "dataset": "celeba",
            "data_root": str(folder),
            "arch": "conv",
            "crop": "none",
            "cache_dir": str(work / "cache"),
        }
    )
    path = work / "celeba64.arrow"
    start = time.perf_counter()
    write_plan(make_plan(config), path, progress=True)
    prepare_s = time.perf_counter() - start
    file_config = config.replace(data_path=str(path))

    uint8_s, float_s, arrow_n = arrow_epochs(file_config)
    notebook_s, notebook_n = notebook_epoch(folder, workers=0)
    workers = min(4, os.cpu_count() or 1)
    loader_s, loader_n = notebook_epoch(folder, workers=workers)
    uint8_rate, float_rate = arrow_n / uint8_s, arrow_n / float_s
    notebook_rate = notebook_n / notebook_s
    loader_rate = loader_n / loader_s
    first_arrow = first_batch_seconds("arrow", path)
    first_notebook = first_batch_seconds("notebook", folder)
    trials = two_trials(path)
    size = path.stat().st_size
    file_rss = [t["file"]["Rss"] for t in trials]
    file_pss = [t["file"]["Pss"] for t in trials]
    file_shared = [t["file"]["Shared_Clean"] for t in trials]
    process_rss = [t["process_rss"] for t in trials]

    speedup = uint8_rate / notebook_rate
    lines = [
        f"## Data pipeline: {args.images:,} generated 178x218 JPEGs -> 64 px, batch {BATCH}",
        "",
        f"`{command()}` at commit {commit()} on {machine()}, one session. "
        "The Arrow epoch draws shuffled uint8 "
        "batches from the memory-mapped file: what the trainer moves to its device, where "
        "they become float (the second Arrow row also makes dequantised float in [-1, 1] on "
        "the CPU, as a CPU-only trial does). The notebook's epoch decodes every JPEG with "
        "PIL through ImageFolder + Resize((64, 64)) + ToTensor + Normalize and a "
        f"DataLoader (its default 0 workers; also with {workers} workers).",
        "",
        "| pipeline | images/s | epoch (s) | vs notebook |",
        "|---|---|---|---|",
        f"| notebook, 0 workers | {notebook_rate:,.0f} | {notebook_s:.1f} | 1x |",
        f"| notebook, {workers} workers | {loader_rate:,.0f} | {loader_s:.1f} "
        f"| {loader_rate / notebook_rate:.1f}x |",
        f"| vae_core, Arrow, uint8 batches | {uint8_rate:,.0f} | {uint8_s:.2f} "
        f"| **{speedup:.0f}x** |",
        f"| vae_core, Arrow, + float on CPU | {float_rate:,.0f} | {float_s:.2f} "
        f"| {float_rate / notebook_rate:.0f}x |",
        "",
        f"- One-off `prepare` (decode, crop, resize, write {mib(size)}): "
        f"{prepare_s:.1f} s, {args.images / prepare_s:,.0f} images/s; paid once per "
        "dataset and size, not per trial.",
        f"- Time to a trial's first batch, fresh process: Arrow file {first_arrow:.2f} s, "
        f"notebook pipeline {first_notebook:.2f} s (both include importing torch).",
        f"- Two trials reading the same {mib(size)} file at once, after two epochs each: "
        f"each has {mib(file_rss[0])} / {mib(file_rss[1])} of the file resident, "
        f"{mib(file_shared[0])} / {mib(file_shared[1])} of it shared; its proportional "
        f"share is {mib(file_pss[0])} + {mib(file_pss[1])} = {mib(sum(file_pss))}: the "
        f"file is in memory once, not twice (whole processes: {mib(process_rss[0])} and "
        f"{mib(process_rss[1])} resident, mostly torch).",
    ]
    save_json(
        "data_pipeline",
        {
            "images_per_s": {"notebook_0_workers": notebook_rate, "notebook_workers": loader_rate,
                             "arrow_uint8": uint8_rate, "arrow_float_cpu": float_rate},
            "prepare_s": prepare_s,
            "first_batch_s": {"arrow": first_arrow, "notebook": first_notebook},
            "two_trials": trials,
        },
    )  # fmt: skip
    write_section("data_pipeline", "\n".join(lines))


if __name__ == "__main__":
    main()
