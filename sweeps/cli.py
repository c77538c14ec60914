"""`vae-sweep`: browse the sweeps, and use the models they registered, by name.

    vae-sweep list                                          # the sweeps, newest first
    vae-sweep show shapes-20261202-071058                   # its best trials, its front
    vae-sweep promote celeba-vae 4 --reason "sharper faces" # move @champion by hand
    vae-sweep delete celeba-vae 2                           # the best one left is champion
    vae-sweep pull celeba-vae@champion --out models/celeba  # files: checkpoint, config
    vae-sweep sample celeba-vae -n 64 --out samples.png     # the alias defaults to champion
    vae-sweep reconstruct celeba-vae/3 --images faces/ --out recon.png
    vae-sweep encode celeba-vae --images faces/ --out latents.parquet
    vae-sweep image ghcr.io/you/vae-sweep-trainer:0.1.0     # the image cluster/ configs run

NAME@ALIAS, NAME/VERSION or models:/... ; the tracking URI is --tracking-uri, else
$MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db. In Python:
`sweeps.registry.load_model("celeba-vae@champion")` returns the VAE in eval mode.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

# torch, MLflow and Ray load only when a command needs them: `vae-sweep --help` and
# `vae-sweep image` answer at once.

REF = "NAME[@ALIAS]"
REF_HELP = "a registered model: NAME (its @champion), NAME@ALIAS or NAME/VERSION"
CROPS = ("center", "tight", "none")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # The shared options go before or after the command: `vae-sweep pull M --tracking-uri U`.
    # (SUPPRESS: a command's own default would overwrite a value given before the command.)
    shared = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    shared.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, ./mlflow.db)"
    )
    shared.add_argument("--device", help="cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command = partial(commands.add_parser, parents=[shared])

    listing = add_command("list", help="the sweeps in the store, newest first")
    listing.add_argument("--experiment", help="only this experiment's (default every one)")
    show = add_command("show", help="a sweep: its best trials and its Pareto front")
    show.add_argument("name", metavar="SWEEP", help="the sweep's name (--name of its script)")
    show.add_argument("--experiment", help="where to look (default every experiment)")
    show.add_argument("--top", type=int, default=10, help="how many trials (default 10)")
    promote = add_command("promote", help="make a version the champion by hand, saying why")
    promote.add_argument("name", metavar="NAME", help="the registered model")
    promote.add_argument("version", metavar="VERSION", help="its version number")
    promote.add_argument("--reason", required=True, help="why (kept on the version)")
    delete = add_command(
        "delete", help="delete a version; if it was champion, the best one left takes over"
    )
    delete.add_argument("name", metavar="NAME", help="the registered model")
    delete.add_argument("version", metavar="VERSION", help="its version number")

    pull = add_command("pull", help="download a registered model's files")
    pull.add_argument("ref", metavar=REF, help=REF_HELP)
    pull.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to put them")
    sample = add_command("sample", help="a grid of samples from the prior (PNG, JPEG, WebP)")
    sample.add_argument("ref", metavar=REF, help=REF_HELP)
    sample.add_argument("-n", type=int, default=64, help="how many (default 64)")
    sample.add_argument("--seed", type=int, default=0, help="the draws' seed (default 0)")
    sample.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="s.png, s.jpg or s.webp"
    )
    for name, what, out in (
        ("reconstruct", "a grid: images beside their reconstructions", "recon.png (or .jpg)"),
        ("encode", "posterior means of images as Parquet (file, z_0, z_1, ...)", "z.parquet"),
    ):
        command = add_command(name, help=what)
        command.add_argument("ref", metavar=REF, help=REF_HELP)
        command.add_argument(
            "--images",
            type=Path,
            required=True,
            metavar="DIR",
            help="a folder of JPEG/PNG/WebP images (searched recursively)",
        )
        command.add_argument(
            "--limit",
            type=int,
            default=None if name == "encode" else 32,
            help=f"at most N images (default {'all' if name == 'encode' else 32})",
        )
        command.add_argument(
            "--crop",
            choices=CROPS,
            default=None,
            help="how to cut them square (default: as the model's training images were)",
        )
        command.add_argument("--out", type=Path, required=True, metavar="FILE", help=out)
    image_command = commands.add_parser(
        "image",
        help="print or set the trainer image the cluster configs run",
        description="With REF, writes it into cluster/config.yaml, local.yaml and kuberay.yaml "
        "(every place they name the trainer image); without, prints the one they name.",
    )
    image_command.add_argument(
        "ref", nargs="?", metavar="REF", help="e.g. ghcr.io/you/vae-sweep-trainer:0.1.0"
    )
    image_command.add_argument(
        "--cluster-dir",
        type=Path,
        default=Path("cluster"),
        help="the configs' folder (default ./cluster)",
    )
    return parser


def _images_for(model, folder: Path, crop: str, limit: int | None):
    """The folder's images at the model's size and colour, cut as `crop`: uint8 (N, C, H, W)
    and their file names."""
    import numpy as np
    import torch

    from vae_core.data.sources import DatasetNotFoundError, decode_image, list_images

    channels, size = model.image_shape[0], model.image_shape[1]
    if not folder.is_dir():
        raise DatasetNotFoundError(f"--images {folder}: not a folder")
    images, kept = [], []
    for name in list_images(folder)[:limit]:
        try:
            images.append(decode_image(folder / name, size, channels, crop))
            kept.append(name)
        except Exception as err:  # noqa: BLE001 - an unreadable file is skipped, and said
            print(f"vae-sweep: skipped {name}: {type(err).__name__}: {err}", file=sys.stderr)
    if not kept:
        raise DatasetNotFoundError(f"--images {folder}: no readable JPEG/PNG/WebP image")
    return torch.from_numpy(np.stack(images)), kept


def _encode(model, images, out: Path, files: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    with torch.no_grad():
        x = model.coding.encode(images.to(next(model.parameters()).device), dequantize=False)
        z = model.encode(x).mode().cpu().numpy()  # (N, Z)
    table = pa.table({"file": files, **{f"z_{j}": z[:, j] for j in range(z.shape[1])}})
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)


def run(args: argparse.Namespace) -> str:
    """A command that reads the store (all but `image`); what it did, for stderr."""
    from mlflow.tracking import MlflowClient

    from sweeps import browse
    from sweeps.tracking import absolute_tracking_uri, default_tracking_uri, quiet_downloads

    quiet_downloads()
    uri = absolute_tracking_uri(args.tracking_uri or default_tracking_uri())
    _check_out(args)  # before any download or compute
    browse.check_store(uri)  # reading never creates a store
    client = MlflowClient(uri, registry_uri=uri)
    if args.command == "list":
        browse.render([browse.list_table(client, args.experiment)])
        return f"sweeps in {uri}"
    if args.command == "show":
        browse.render(browse.show_tables(client, args.name, args.experiment, args.top))
        return f"sweep {args.name} in {uri}"
    if args.command == "promote":
        return browse.promote(uri, args.name, args.version, args.reason)
    if args.command == "delete":
        return browse.delete(uri, args.name, args.version)
    from sweeps.registry import download, load_model
    from vae_core import read_checkpoint, viz

    if args.command == "pull":
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = download(uri, args.ref, Path(tmp))
            read_checkpoint(checkpoint)  # a safetensors checkpoint (header read, nothing run)
            args.out.mkdir(parents=True, exist_ok=True)
            for f in checkpoint.parent.iterdir():
                if f.is_file():
                    shutil.copy2(f, args.out / f.name)
        return f"pulled {args.ref} into {args.out}"
    model = load_model(args.ref, args.device, tracking_uri=uri)
    if args.command == "sample":
        viz.sample_grid(model, args.out, n=args.n, seed=args.seed)
        return f"wrote {args.n} samples of {args.ref} to {args.out}"
    crop = args.crop or model.crop
    images, files = _images_for(model, args.images, crop, args.limit)
    if args.command == "reconstruct":
        viz.reconstruction_grid(model, images, args.out)
    else:
        _encode(model, images, args.out, files)
    return f"wrote {args.command} of {len(files)} images ({crop} crop) to {args.out}"


def _check_out(args: argparse.Namespace) -> None:
    """--out names a file of a format we write, in a folder that exists."""
    out = getattr(args, "out", None)
    if out is None or args.command == "pull":
        return
    if args.command in ("sample", "reconstruct"):
        from vae_core.viz import image_format

        image_format(out)  # ValueError naming the suffixes taken
    elif out.suffix.lower() != ".parquet":
        raise ValueError(f"--out {out}: expected a .parquet file")
    if not out.parent.exists():
        raise ValueError(f"--out {out}: no folder {out.parent}")


def _image(args: argparse.Namespace) -> None:
    from sweeps import image

    if args.ref is None:
        print(image.current(args.cluster_dir))
        return
    old = image.set_image(args.cluster_dir, args.ref)
    print(
        f"vae-sweep: {', '.join(image.CONFIGS)} in {args.cluster_dir} now run {args.ref} "
        f"(was {old}); build and push it before `ray up`",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "image":
        try:
            _image(args)
        except ValueError as err:
            parser.exit(2, f"vae-sweep: error: {err}\n")
        return 0
    from mlflow.exceptions import MlflowException

    from sweeps.registry import ModelNotFoundError
    from sweeps.tracking import refusal
    from vae_core.cli import end_without_collecting
    from vae_core.data.sources import DatasetNotFoundError

    end_without_collecting()  # the other commands load torch and MLflow

    try:
        print(f"vae-sweep: {run(args)}", file=sys.stderr)
    except (ModelNotFoundError, DatasetNotFoundError, ValueError) as err:
        parser.exit(2, f"vae-sweep: error: {err}\n")
    except MlflowException as err:
        said = refusal(err) or f"the tracking server refused: {str(err).splitlines()[0][:300]}"
        parser.exit(2, f"vae-sweep: error: {said}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
