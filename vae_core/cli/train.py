"""`vae-train`: one training run from flags and/or a YAML file.

    vae-train --dataset mnist --arch conv --latent-dim 16 --epochs 5 --out runs/mnist
    vae-train --config run.yaml --kl-weight 4        # flags override the file

Writes into --out: config.yaml (the resolved config), metrics.json (one record per epoch,
rewritten after each), checkpoint.safetensors (after each epoch), test_metrics.json (test_bpd,
test_iwae_nll at the end) and PNG grids under images/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from vae_core.checkpoint import CHECKPOINT_NAME, CheckpointError, read_checkpoint
from vae_core.cli import end_without_collecting
from vae_core.config import SECTIONS, Config, ConfigError
from vae_core.data import DataFileError, DatasetNotFoundError, load_splits
from vae_core.data.arrow import PrepareError
from vae_core.trainer import DivergenceError, TrainState, fit


def _optional(parse):
    def parse_optional(text: str):
        return None if text.lower() in ("none", "null") else parse(text)

    parse_optional.__name__ = parse.__name__  # argparse names the type in its errors
    return parse_optional


def _add_field_flag(group: argparse._ArgumentGroup, f: dataclasses.Field) -> None:
    """One flag per config field: --latent-dim for latent_dim, typed from its annotation."""
    flag, kind = "--" + f.name.replace("_", "-"), str(f.type)
    help_text = f"{f.metadata.get('doc', '')} (default: {f.default})"
    base = {"int": int, "float": float, "str": str}.get(kind.split(" ")[0].split("[")[0])
    if kind == "bool":
        group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
    elif kind.startswith("tuple"):
        group.add_argument(flag, nargs="+", type=int, metavar="N", help=help_text)
    elif kind.endswith("| None"):
        group.add_argument(flag, type=_optional(base), metavar=f.name.upper(), help=help_text)
    else:
        group.add_argument(flag, type=base, metavar=f.name.upper(), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-train",
        description=__doc__,
        epilog="Every config field has a flag; a YAML file given with --config may set any of "
        "them, flat (latent_dim: 8) or by section (model: {latent_dim: 8}).",
        argument_default=argparse.SUPPRESS,  # only flags actually given override the file
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument("--config", type=Path, metavar="FILE", help="YAML file of config fields")
    run.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (default: runs/<dataset>-<arch>-z<latent_dim>)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from --out/checkpoint.safetensors up to --epochs; flags may change "
        "e.g. --lr, --kl-weight or a fixed --sigma-x (applied, and said), not the model or data",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh even if --out already holds a checkpoint",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    for name, section in SECTIONS.items():
        group = parser.add_argument_group(name)
        for f in dataclasses.fields(section):
            _add_field_flag(group, f)
    return parser


RUN_FLAGS = ("config", "out", "resume", "overwrite", "no_progress")


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    """base (e.g. a resumed run's config), then the --config file, then the flags given.

    Later keys win in Config.from_dict, flat or sectioned alike.
    """
    values: dict[str, Any] = base.to_dict() if base is not None else {}
    if getattr(args, "config", None) is not None:
        values.update(_read_yaml(args.config))
    values.update({k: v for k, v in vars(args).items() if k not in RUN_FLAGS})
    return Config.from_dict(values)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"--config {path}: cannot read ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"--config {path}: not valid YAML ({err})") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"--config {path}: expected a mapping of config fields, got {type(values).__name__}"
        )
    return values


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def default_out(config: Config) -> Path:
    m = config.model
    return Path("runs") / f"{config.data.dataset}-{m.arch}-z{m.latent_dim}"


def run(args: argparse.Namespace) -> Path:
    config = config_from_args(args)
    out = (getattr(args, "out", None) or default_out(config)).resolve()
    ckpt_path = out / CHECKPOINT_NAME
    resume = None
    if getattr(args, "resume", False):
        resume = read_checkpoint(ckpt_path)  # CheckpointError names the file if absent
        config = config_from_args(args, base=resume.config)
    elif ckpt_path.exists() and not getattr(args, "overwrite", False):
        raise ConfigError(
            f"--out {out} already holds a checkpoint: pass --resume to continue "
            "it, --overwrite to start afresh, or another --out"
        )
    data = load_splits(config)  # fails fast, before any compute, if the files are missing
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    print(
        f"vae-train: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test "
        f"images of {config.data.dataset} -> {out}",
        file=sys.stderr,
    )

    def on_epoch_end(state: TrainState) -> None:
        state.save(ckpt_path)
        _write_json(out / "metrics.json", state.history)

    state = fit(
        config,
        data,
        on_epoch_end=on_epoch_end,
        resume_from=resume,
        progress=not getattr(args, "no_progress", False),
    )
    _finish(state, data, out, progress=not getattr(args, "no_progress", False))
    return out


def _finish(state: TrainState, data, out: Path, progress: bool = True) -> None:
    from vae_core import viz
    from vae_core.metrics import final_metrics

    start = time.perf_counter()
    images = viz.write_all(state.model, data, out / "images", seed=state.config.train.seed)
    test = final_metrics(
        state.model, data.test.images, k=state.config.train.iwae_samples, progress=progress
    )
    test["eval_seconds"] = time.perf_counter() - start
    _write_json(out / "test_metrics.json", test)
    last = state.history[-1]
    print(
        f"vae-train: epoch {last['epoch']}: val_bpd {last['val_bpd']:.4f}, "
        f"test_bpd {test['test_bpd']:.4f}, test_iwae_nll {test['test_iwae_nll']:.2f} nats "
        f"(k={test['iwae_k']}), active units {last['active_units']}/"
        f"{state.config.model.latent_dim}\n"
        f"vae-train: wrote {out / 'metrics.json'}, {out / CHECKPOINT_NAME}, "
        f"{out / 'test_metrics.json'} and {len(images)} images in {out / 'images'}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    end_without_collecting()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args)
    except (
        ConfigError,
        DatasetNotFoundError,
        DataFileError,
        PrepareError,
        CheckpointError,
    ) as err:
        parser.exit(2, f"vae-train: error: {err}\n")
    except DivergenceError as err:
        parser.exit(1, f"vae-train: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
