"""Recorded learning curves: a few hundred configs of sweeps/mnist.py's search space, each
trained to the whole epoch budget on MNIST and Fashion-MNIST, every epoch's metrics kept in a
Parquet table, so that searchers can be compared on many seeds of real curves (LCBench and
YAHPO Gym do the same) instead of a few live sweeps (benchmarks/search_replay.py replays them).

    python benchmarks/curves.py record --data-root ../shared/data                # every part
    python benchmarks/curves.py record --data-root ../shared/data --dataset mnist --part 0
    python benchmarks/curves.py show                                              # what is in

The space is sweeps/mnist.py's: latent size, kl_weight, sigma_x, likelihood (gaussian with
fixed or learned sigma_x; bernoulli's val_bpd is another quantity) and lr. The configs are
the first points of a scrambled Sobol sequence mapped onto it (every region of the space
covered, none twice), the same for both datasets. Each is trained for EPOCHS epochs with the
real trainer (vae_core.fit), seed = the config's number: the MLP with two hidden layers of
256, batch 128, on the first 6,000 images of the training split (4,800 train, 1,200 val), one
thread per config, two configs at a time. A config that diverges keeps the epochs it had.

The table is written in parts (PART_SIZE configs each, a few minutes on 2 cores), each a file
benchmarks/curves/<dataset>-<k>.parquet written whole or not at all, with the command, commit
and machine that made it and what it cost in its metadata; a part already there is skipped,
so an interrupted recording goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _report import REPO, command, commit, machine

FOLDER = REPO / "benchmarks" / "curves"
DATASETS = ("mnist", "fashion_mnist")
EPOCHS = 27  # ASHA with grace 1 and reduction 3 has rungs at 1, 3, 9 and 27
CONFIGS = 256  # per dataset
PART_SIZE = 32
SOBOL_SEED = 0

# sweeps/mnist.py's space, as the recorded configs sample it
LATENT = (2, 4, 8, 16, 32, 64)
LIKELIHOOD = ("gaussian", "gaussian_learned")
LOG_RANGES = {"kl_weight": (0.1, 10.0), "sigma_x": (0.02, 0.5), "lr": (3e-4, 3e-3)}

BASE = {
    "model": {"arch": "mlp", "hidden_dims": [256, 256]},
    "data": {"limit": 6000, "val_fraction": 0.2},
    "train": {"epochs": EPOCHS, "batch_size": 128, "device": "cpu"},
}

SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("config", pa.int32()),
        ("latent_dim", pa.int32()),
        ("kl_weight", pa.float64()),
        ("sigma_x", pa.float64()),
        ("likelihood", pa.string()),
        ("lr", pa.float64()),
        ("epoch", pa.int32()),
        ("val_bpd", pa.float64()),
        ("train_loss", pa.float64()),
        ("epoch_seconds", pa.float32()),
        ("diverged", pa.bool_()),  # the config diverged after its last recorded epoch
    ]
)


def configs(n: int = CONFIGS) -> list[dict]:
    """The first n points of a scrambled Sobol sequence over the space, as config values."""
    from scipy.stats import qmc

    points = qmc.Sobol(d=5, scramble=True, seed=SOBOL_SEED).random(n)
    out = []
    for u in points:
        values = {
            "latent_dim": LATENT[min(int(u[0] * len(LATENT)), len(LATENT) - 1)],
            "likelihood": LIKELIHOOD[min(int(u[1] * len(LIKELIHOOD)), len(LIKELIHOOD) - 1)],
        }
        for (key, (low, high)), x in zip(LOG_RANGES.items(), u[2:], strict=True):
            values[key] = float(math.exp(math.log(low) + x * (math.log(high) - math.log(low))))
        out.append(values)
    return out


def part_path(dataset: str, part: int) -> Path:
    return FOLDER / f"{dataset}-{part}.parquet"


_DATA = {}  # per worker process: the dataset's splits, loaded once


def _train(dataset: str, data_root: str, number: int, values: dict) -> list[dict]:
    """One config trained for EPOCHS epochs (or until it diverges): a row per epoch."""
    import torch

    from vae_core import Config, DivergenceError, fit, load_splits

    torch.set_num_threads(1)
    config = Config.from_dict(
        {
            "model": {
                **BASE["model"],
                "latent_dim": values["latent_dim"],
                "likelihood": values["likelihood"],
                "sigma_x": values["sigma_x"],
            },
            "data": {**BASE["data"], "dataset": dataset, "data_root": data_root},
            "train": {
                **BASE["train"],
                "kl_weight": values["kl_weight"],
                "lr": values["lr"],
                "seed": number,
            },
        }
    )
    if dataset not in _DATA:
        _DATA[dataset] = load_splits(config, progress=False)
    history: list[dict] = []

    def keep(state) -> None:
        history.append(state.history[-1])

    diverged = False
    try:
        fit(config, _DATA[dataset], on_epoch_end=keep)
    except DivergenceError:
        diverged = True
    return [
        {
            "dataset": dataset,
            "config": number,
            **values,
            "epoch": record["epoch"],
            "val_bpd": record["val_bpd"],
            "train_loss": record["train_loss"],
            "epoch_seconds": record["epoch_seconds"],
            "diverged": diverged and record is history[-1],
        }
        for record in history
    ]


def record_part(dataset: str, part: int, data_root: str, workers: int) -> None:
    path = part_path(dataset, part)
    if path.exists():
        print(f"{path.relative_to(REPO)}: there already, skipped")
        return
    numbers = range(part * PART_SIZE, min((part + 1) * PART_SIZE, CONFIGS))
    space = configs()
    started = time.monotonic()
    rows: list[dict] = []
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(_train, dataset, data_root, i, space[i]) for i in numbers]
        for done, future in enumerate(as_completed(futures), 1):
            rows.extend(future.result())
            print(
                f"\r{dataset} part {part}: {done}/{len(futures)} configs, "
                f"{time.monotonic() - started:.0f} s",
                end="",
                flush=True,
            )
    print()
    rows.sort(key=lambda r: (r["config"], r["epoch"]))
    seconds = time.monotonic() - started
    meta = {
        "command": command(),
        "commit": commit(),
        "machine": machine(),
        "wall_seconds": f"{seconds:.1f}",
        "workers": str(workers),
        "base_config": json.dumps(BASE),
        "sobol_seed": str(SOBOL_SEED),
    }
    table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata(meta)
    FOLDER.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=FOLDER, suffix=".tmp", delete=False) as f:
        pq.write_table(table, f.name, compression="zstd")
    os.chmod(f.name, 0o644)
    os.replace(f.name, path)
    print(f"{path.relative_to(REPO)}: {len(numbers)} configs in {seconds:.0f} s")


def load(dataset: str | None = None) -> pa.Table:
    """Every recorded part (of `dataset`), one table."""
    paths = sorted(FOLDER.glob(f"{dataset or '*'}-*.parquet"))
    if not paths:
        raise SystemExit(
            f"no recorded curves in {FOLDER.relative_to(REPO)}: "
            "run python benchmarks/curves.py record --data-root ../shared/data"
        )
    return pa.concat_tables(pq.read_table(p) for p in paths)


class Curves:
    """One dataset's recorded curves, found by config."""

    def __init__(self, dataset: str) -> None:
        rows = load(dataset).to_pylist()
        by_config: dict[int, list[dict]] = {}
        for row in rows:
            by_config.setdefault(row["config"], []).append(row)
        self.ids = sorted(by_config)
        first = [by_config[i][0] for i in self.ids]
        self.cells = [(r["latent_dim"], r["likelihood"]) for r in first]
        self.coords = np.array([[self._unit(k, r[k]) for k in LOG_RANGES] for r in first])
        self.curves = [
            [r["val_bpd"] for r in sorted(by_config[i], key=lambda r: r["epoch"])]
            for i in self.ids
        ]
        self.diverged = [any(r["diverged"] for r in by_config[i]) for i in self.ids]
        self.best = min(min(c) for c in self.curves if c)

    @staticmethod
    def _unit(key: str, value: float) -> float:
        low, high = LOG_RANGES[key]
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))

    def nearest(self, config: dict) -> int:
        """The index of the recorded config nearest to `config`, in its latent size and
        likelihood cell."""
        cell = (config["latent_dim"], config["likelihood"])
        point = np.array([self._unit(k, config[k]) for k in LOG_RANGES])
        candidates = [i for i, c in enumerate(self.cells) if c == cell]
        distances = np.linalg.norm(self.coords[candidates] - point, axis=1)
        return candidates[int(np.argmin(distances))]


def replay(config: dict, curves: Curves) -> None:
    """A Tune trial that reports its nearest recorded curve, an epoch per result (here, not
    in search_replay.py: a Tune worker imports this light module, not the sweep engine)."""
    from ray import tune

    index = curves.nearest(config)
    for epoch, value in enumerate(curves.curves[index], 1):
        tune.report({"val_bpd": value, "epoch": epoch, "recorded": curves.ids[index]})
    if curves.diverged[index]:
        raise RuntimeError(f"recorded config {curves.ids[index]} diverged")


def cost() -> tuple[float, int]:
    """Wall seconds the recorded parts took, and how many configs they hold."""
    seconds, n = 0.0, 0
    for path in FOLDER.glob("*.parquet"):
        meta = pq.read_schema(path).metadata or {}
        seconds += float(meta.get(b"wall_seconds", 0))
        n += len(set(pq.read_table(path, columns=["config"]).column("config").to_pylist()))
    return seconds, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    rec = sub.add_parser("record", help="train the configs of the parts not recorded yet")
    rec.add_argument("--data-root", required=True, help="folder holding MNIST/ and FashionMNIST/")
    rec.add_argument("--dataset", choices=DATASETS, help="one dataset (default: both)")
    rec.add_argument("--part", type=int, help=f"one part of {PART_SIZE} configs (default: all)")
    rec.add_argument("--workers", type=int, default=2, help="configs trained at once")
    sub.add_parser("show", help="what the table holds and what it cost")
    args = parser.parse_args()
    if args.what == "show":
        table = load()
        seconds, n = cost()
        print(f"{table.num_rows} rows, {n} configs, recorded in {seconds / 60:.1f} min")
        for dataset in DATASETS:
            print(f"  {dataset}: {len(set(load(dataset).column('config').to_pylist()))} configs")
        return
    parts = range(math.ceil(CONFIGS / PART_SIZE)) if args.part is None else [args.part]
    for part in parts:  # both datasets part by part: a recording cut short covers both
        for dataset in [args.dataset] if args.dataset else DATASETS:
            record_part(dataset, part, args.data_root, args.workers)


if __name__ == "__main__":
    sys.exit(main())
