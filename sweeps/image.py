"""The trainer image every cluster node runs, named in one command: `vae-sweep image REF`.

`ray up` and `kubectl apply` expand no variables in their YAML (ray-project/ray#29016), so the
reference is written into each config that names it, where those tools read it as plain text:
cluster/config.yaml and cluster/local.yaml (`docker.image`) and cluster/kuberay.yaml (every
container of the head and worker groups). All are rewritten or none is; comments stay as they are.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

CONFIGS = ("config.yaml", "local.yaml", "kuberay.yaml")

# Docker's reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?/)"
_REFERENCE = re.compile(
    rf"(?P<name>{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)


class ImageError(ValueError):
    """A reference Docker would not take, or configs that disagree on the image."""


def check_reference(reference: str) -> str:
    match = _REFERENCE.fullmatch(reference)
    if not match:
        raise ImageError(
            f"{reference!r} is not an image reference: expected "
            "[registry/]path:tag, e.g. ghcr.io/you/vae-sweep-trainer:0.1.0 (lower-case path)"
        )
    if not (match["tag"] or match["digest"]) or match["tag"] == "latest":
        raise ImageError(
            f"{reference!r} names no fixed version: give a tag (e.g. :0.1.0) or @sha256:... "
            "so that every node runs the same image"
        )
    return reference


def _images_in(name: str, text: str) -> list[str]:
    """The trainer image references in one config, in document order."""
    config = yaml.safe_load(text)
    if name != "kuberay.yaml":
        return [config["docker"]["image"]]
    spec = config["spec"]
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    pods = [group["template"]["spec"] for group in groups]
    return [c["image"] for pod in pods for c in pod.get("initContainers", []) + pod["containers"]]


def current(cluster_dir: Path) -> str:
    """The image the configs name; an error naming the file that names another."""
    found: dict[str, set[str]] = {}
    for name in CONFIGS:
        path = cluster_dir / name
        if not path.is_file():
            raise ImageError(f"{path}: not found (run this in the vae-sweep checkout)")
        found[name] = set(_images_in(name, path.read_text()))
    first = found[CONFIGS[0]]
    for name, images in found.items():
        if images != first:
            raise ImageError(
                f"{cluster_dir / name} names {sorted(images)}, {cluster_dir / CONFIGS[0]} "
                f"{sorted(first)}: set one with `vae-sweep image REF`"
            )
    (image,) = first
    return image


def set_image(cluster_dir: Path, reference: str) -> str:
    """Writes `reference` wherever the configs name the trainer image; returns the old one."""
    check_reference(reference)
    old = current(cluster_dir)
    line = re.compile(rf"^(\s*-?\s*image:\s*)([\"']?){re.escape(old)}\2(\s*(?:#.*)?)$", re.M)
    texts = {}
    for name in CONFIGS:
        text = (cluster_dir / name).read_text()
        new = line.sub(lambda m: f'{m[1]}"{reference}"{m[3]}', text)
        if set(_images_in(name, new)) != {reference}:  # a reference not on an `image:` line
            raise ImageError(f"{cluster_dir / name}: could not rewrite its image {old!r}")
        texts[name] = new
    for name, text in texts.items():  # every config checked before any is written
        path = cluster_dir / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return old
