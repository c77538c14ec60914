"""`vae-data`: decode a dataset once into an Arrow file, and say what a file holds.

    vae-data prepare mnist --root ../shared/data --out mnist.arrow
    vae-data prepare celeba --root /data --size 128 --crop tight --out s3://bucket/celeba.arrow
    vae-data prepare image_folder --root ~/photos --size 64 --out photos.arrow
    vae-data prepare shapes --out shapes.arrow
    vae-data info mnist.arrow

Train with the file: `vae-train --dataset celeba --image-size 128 --data-path FILE`. Without
one, vae-train and the sweeps prepare into the node cache ($VAE_CACHE_DIR) on first use.
"""

from __future__ import annotations

import argparse
import json
import sys

from vae_core.cli import end_without_collecting
from vae_core.config import COLORS, CROPS, DATASETS, Config
from vae_core.data.arrow import PrepareError, open_prepared, write_plan
from vae_core.data.cache import fetch, make_plan
from vae_core.data.sources import DatasetNotFoundError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="decode a dataset into an Arrow file")
    prepare.add_argument("dataset", choices=list(DATASETS))
    prepare.add_argument(
        "--out",
        required=True,
        metavar="PATH_OR_URI",
        help="the Arrow file to write: a path or an s3://, gs://, file:// URI",
    )
    prepare.add_argument(
        "--root",
        metavar="DIR",
        help="where the source is: mnist's <root>/MNIST/raw, celeba's "
        "<root>/celeba/img_align_celeba, image_folder's folder itself "
        "(default $VAE_DATA_ROOT, else ./data); unused by shapes",
    )
    prepare.add_argument(
        "--size",
        type=int,
        metavar="PX",
        help="square image side (default 28 for (fashion_)mnist, else 64)",
    )
    prepare.add_argument(
        "--crop",
        choices=CROPS,
        default="center",
        help="photos only: centred square, the TF model's tight face crop, "
        "or none (squash); default center",
    )
    prepare.add_argument("--color", choices=list(COLORS), help="default: the dataset's own")
    prepare.add_argument(
        "--limit", type=int, metavar="N", help="at most N images per split (quick tries, tests)"
    )
    prepare.add_argument(
        "--strict", action="store_true", help="fail on an unreadable image instead of skipping it"
    )
    prepare.add_argument(
        "--download",
        action="store_true",
        help="let torchvision download (fashion_)mnist into --root",
    )
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")
    info = commands.add_parser("info", help="print what a prepared file holds")
    info.add_argument("path", metavar="PATH_OR_URI")
    info.add_argument("--json", action="store_true", help="the raw metadata as JSON")
    return parser


def prepare(args: argparse.Namespace) -> None:
    # arch mlp takes every size: the file is not tied to an architecture.
    config = Config.from_dict(
        {
            "arch": "mlp",
            "dataset": args.dataset,
            "data_root": args.root,
            "image_size": args.size,
            "crop": args.crop,
            "color": args.color,
            "limit": args.limit,
            "download": args.download,
        }
    )
    plan = make_plan(config)
    write_plan(plan, args.out, strict=args.strict, progress=not args.no_progress)
    print(describe(open_prepared(fetch(args.out))))


def describe(prepared) -> str:
    meta = prepared.meta
    splits = ", ".join(f"{name} {stop - start}" for name, (start, stop) in meta["splits"].items())
    lines = [
        f"file       {prepared.path} ({prepared.path.stat().st_size / 2**20:.1f} MiB)",
        f"dataset    {meta['dataset']} from {meta['source']}",
        f"images     {meta['count']} x {meta['channels']}x{meta['size']}x{meta['size']} uint8",
        f"splits     {splits}"
        + (
            ""
            if "val" in meta["splits"]
            else " (val is cut from train at load: data.val_fraction)"
        ),
    ]
    if meta["label_names"]:
        lines.append(f"labels     {len(meta['label_names'])}: {', '.join(meta['label_names'])}")
    if meta["factors"]:
        lines.append(f"factors    {', '.join(meta['factors'])}")
    if meta["options"]:
        lines.append(f"options    {', '.join(f'{k}={v}' for k, v in meta['options'].items())}")
    lines.append(f"checksum   {meta['source_checksum'][:16]} (sha256 of the source list)")
    if meta["skipped"]:
        first = meta["skipped"][0]
        lines.append(
            f"skipped    {len(meta['skipped'])} unreadable, e.g. {first['file']}: "
            f"{first['reason']}"
        )
    return "\n".join(lines)


def info(args: argparse.Namespace) -> None:
    prepared = open_prepared(fetch(args.path))
    print(json.dumps(prepared.meta, indent=2) if args.json else describe(prepared))


def main(argv: list[str] | None = None) -> int:
    end_without_collecting()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        {"prepare": prepare, "info": info}[args.command](args)
    except (DatasetNotFoundError, PrepareError, ValueError) as err:  # incl. Config/DataFile
        parser.exit(2, f"vae-data: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
