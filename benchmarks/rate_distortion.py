"""A rate-distortion sweep against a single-objective one at the same epoch budget, on MNIST:
the hypervolume of the front each finds (its trials' points that no other beats on both val_kl
and val_mse), against one reference point for both, and both fronts in one plot.

    python benchmarks/rate_distortion.py --data-root ../shared/data
    python benchmarks/rate_distortion.py --data-root ../shared/data --quick

Baseline, same session: `sweeps/mnist.py --objective val_bpd` (TPE + ASHA), whose trials still
land somewhere in the rate-distortion plane; the front is what a researcher sweeping beta is
after. Hypervolume: the area the front dominates up to the reference point (larger is better);
the reference is 1.1 x the worst rate and distortion of all trials of both sweeps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _report import (
    REPO,
    command,
    commit,
    machine,
    save_json,
    timed_run,
    trial_results,
    write_section,
)

from sweeps.finish import non_dominated

FIGURE = REPO / "docs" / "images" / "rate_distortion_fronts.png"


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by `points` (both coordinates minimised) inside the box up to
    `reference`; points outside the box add nothing."""
    inside = sorted(p for p in points if p[0] < reference[0] and p[1] < reference[1])
    area, ceiling = 0.0, reference[1]
    for x, y in inside:  # by rate; each point of the front lowers the ceiling
        if y < ceiling:
            area += (reference[0] - x) * (ceiling - y)
            ceiling = y
    return area


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated points, by increasing rate (as the sweep's own front is chosen)."""
    return [points[i] for i in non_dominated(points)]


def sweep(folder: Path, name: str, flags: list[str]) -> tuple[list[tuple[float, float]], float]:
    """One mnist.py sweep; each trial's last (val_kl, val_mse) and the sweep's seconds."""
    _, seconds = timed_run(
        [sys.executable, str(REPO / "sweeps" / "mnist.py"), *flags, "--name", name,
         "--storage-path", str(folder / "ray"), "--tracking-uri", f"sqlite:///{folder}/mlflow.db"],
        f"sweep {name}", cwd=folder,
    )  # fmt: skip
    points = [
        (results[-1]["val_kl"], results[-1]["val_mse"])
        for _, results in trial_results(folder / "ray" / name)
        if results
    ]
    return points, seconds


def plot(fronts: dict[str, list], points: dict[str, list], reference) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    for (label, f), colour in zip(fronts.items(), ("tab:red", "tab:blue"), strict=True):
        ax.scatter(*zip(*points[label], strict=True), s=14, color=colour, alpha=0.35)
        xs, ys = zip(*f, strict=True)
        ax.step([*xs, reference[0]], [*ys, ys[-1]], where="post", color=colour, label=label)
    ax.set(xlabel="rate: val_kl (nats per image)", ylabel="distortion: val_mse",
           title="MNIST: the front each sweep found (same epoch budget)")  # fmt: skip
    ax.legend()
    FIGURE.parent.mkdir(exist_ok=True)
    fig.savefig(FIGURE, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--quick", action="store_true", help="8 trials x 2 epochs each")
    args = parser.parse_args()
    trials, epochs = (8, 2) if args.quick else (16, 4)
    budget = trials * epochs
    data_root = str(Path(args.data_root).resolve())  # the sweeps run in a folder of their own
    common = ["--data-root", data_root, "--max-epochs", str(epochs)]
    common += ["--epoch-budget", str(budget), "--num-samples", str(3 * trials)]
    runs = {
        "rate-distortion (multi-objective TPE, FIFO)": ["--objective", "rate-distortion"],
        "val_bpd (TPE + ASHA)": ["--objective", "val_bpd"],
    }
    points, seconds = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for n, (label, flags) in enumerate(runs.items()):
            points[label], seconds[label] = sweep(Path(folder), f"s{n}", common + flags)
    everything = [p for ps in points.values() for p in ps]
    reference = (1.1 * max(p[0] for p in everything), 1.1 * max(p[1] for p in everything))
    fronts = {label: front(ps) for label, ps in points.items()}
    volumes = {label: hypervolume(f, reference) for label, f in fronts.items()}
    plot(fronts, points, reference)
    first, second = list(runs)
    figures = {
        "mode": "quick" if args.quick else "full",
        "epoch_budget": budget,
        "reference": reference,
        "hypervolume": volumes,
        "ratio": volumes[first] / volumes[second] if volumes[second] else None,
        "trials": {label: len(ps) for label, ps in points.items()},
        "front_sizes": {label: len(f) for label, f in fronts.items()},
        "seconds": seconds,
        "fronts": fronts,
    }
    save_json("rate_distortion", figures)
    write_section("rate_distortion", report(figures))
    print(json.dumps(volumes, indent=2))


def report(f: dict) -> str:
    rows = "\n".join(
        f"| {label} | {f['trials'][label]} | {f['front_sizes'][label]} | {v:.4g} | "
        f"{f['seconds'][label] / 60:.1f} |"
        for label, v in f["hypervolume"].items()
    )
    ref = f"({f['reference'][0]:.3g} nats, {f['reference'][1]:.3g})"
    return f"""## Rate-distortion front on MNIST ({f["mode"]} run)

`{command()}` at commit {commit()}, on {machine()}. Both sweeps of `sweeps/mnist.py` with
`--epoch-budget {f["epoch_budget"]}` (the same compute); each trial's last epoch is a point
(val_kl, val_mse); reference point {ref} for both.

| sweep | trials | front | hypervolume | minutes |
|---|---|---|---|---|
{rows}

Hypervolume ratio, rate-distortion / val_bpd: **{f["ratio"]:.2f}**.

![fronts](images/{FIGURE.name})
"""


if __name__ == "__main__":
    main()
