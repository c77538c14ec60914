"""The issue's targets at a glance: one row per target, read from benchmarks/results/*.json
(never typed in), written as the `summary` section at the top of docs/BENCHMARKS.md.

    python benchmarks/summary.py

`python -m benchmarks` runs it after the benchmarks. A benchmark not yet run shows as such.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from _report import RESULTS, write_section

Row = tuple[str, str, str, str]  # (what, measured, target, verdict)


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def trainer_speed(r: dict) -> list[Row]:
    notebook, limit = r["vs_notebook"], r["vs_limit"]
    return [
        ("trainer vs the CelebA notebook's pipeline (CPU)", f"{notebook:.2f}x", ">= 1.5x",
         _verdict(notebook >= 1.5)),
        ("trainer vs the in-memory limit (CPU)", f"{limit:.2f}x", ">= 0.90x",
         _verdict(limit >= 0.9)),
    ]  # fmt: skip


def platform_overhead(r: dict) -> list[Row]:
    reused = r["reused"]
    per_trial, share = reused["overhead_per_trial_s"], reused["share_of_a_one_minute_trial"]
    return [
        (f"platform overhead per trial ({r['trials']} trials)", f"{per_trial:.1f} s", "< 1 s",
         _verdict(per_trial < 1)),
        ("overhead share of a sweep of one-minute trials", f"{share:.1%}", "< 5%",
         _verdict(share < 0.05)),
    ]  # fmt: skip


def scale(r: dict) -> list[Row]:
    growth, at_128 = r["growth_1000_vs_128"], r["per_trial_at_128_s"]
    return [
        ("platform overhead per trial, 1,000 one-epoch trials against 128 (default search)",
         "not run" if growth is None else f"{growth:.2f}x", "<= 1.2x",
         "-" if growth is None else _verdict(growth <= 1.2)),
        ("platform overhead per trial at 128 one-epoch trials (default search)",
         "not run" if at_128 is None else f"{at_128:.2f} s", "< 1 s",
         "-" if at_128 is None else _verdict(at_128 < 1)),
    ]  # fmt: skip


def search_replay(r: dict) -> list[Row]:
    rows = []
    for dataset, result in r["results"].items():
        share = result["methods"][r["default"]]["share"][1]
        shown = f"{share:.0%}" if math.isfinite(share) else "never"
        rows.append((f"default search on recorded curves ({dataset}): median share of random "
                     f"search's epochs to reach its best ({r['seeds']} seeds)", shown, "<= 25%",
                     _verdict(share <= 0.25)))  # fmt: skip
    return rows


def search_live(r: dict) -> list[Row]:
    shares = sorted(run["default_share"] for run in r["runs"])
    median = shares[(len(shares) - 1) // 2]
    shown = ", ".join(f"{f:.0%}" if math.isfinite(f) else "never" for f in shares)
    measured = f"median {median:.0%} ({shown})" if math.isfinite(median) else f"({shown})"
    return [
        (f"default search, live (MNIST MLP): share of random search's epochs to reach its best "
         f"({len(shares)} seeds)", measured, "<= 25%", _verdict(median <= 0.25)),
    ]  # fmt: skip


def seed_mlp_tf(r: dict) -> list[Row]:
    final = r["final"]
    gap = abs(final["loss"] - final["tutorial"]) / final["tutorial"]
    return [
        (f"seed 001 MLP: loss at epoch {final['epoch']} vs the tutorial's",
         f"{final['loss']:.3f} vs {final['tutorial']:.3f} ({gap:.2%})", "within 3%",
         _verdict(gap <= 0.03)),
    ]  # fmt: skip


def seed_keras_conv(r: dict) -> list[Row]:
    ours, theirs = r, r["tutorial"]
    return [
        ("seed 002 Keras conv: best val loss / stop epoch vs the tutorial's",
         f"{ours['best_val_loss']:.2f} / {ours['stopped_after_epoch']} vs "
         f"{theirs['best_val_loss']:.2f} / {theirs['stopped_after_epoch']}", "reported", "-"),
    ]  # fmt: skip


def cluster_scaling(r: dict) -> list[Row]:
    return [
        ("sweep throughput, 2 worker nodes vs 1 (loopback)", f"{r['speedup_wall']:.2f}x",
         "reported", "-"),
    ]  # fmt: skip


def gpu_packing(r: dict) -> list[Row]:
    rows = []
    for k, pack in r["packs"].items():
        if k != "1" and pack["vs_one_alone"]:
            where = "GPU" if r["gpu"] else "CPU, no GPU"
            rows.append((f"{k} trials packed on one device ({where}) vs one alone",
                         f"{pack['vs_one_alone']:.2f}x", "reported", "-"))  # fmt: skip
    return rows


def quickstart(r: dict) -> list[Row]:
    recognised, minutes = r["reconstruction_accuracy"], r["sweep_seconds"] / 60
    return [
        ("quick start: the champion's reconstructions whose shape a classifier recognises",
         f"{recognised:.1%} ({minutes:.1f} min)", f">= {r['target']:.0%} in ~10 min",
         _verdict(recognised >= r["target"])),
    ]  # fmt: skip


def rate_distortion(r: dict) -> list[Row]:
    return [
        ("rate-distortion sweep vs val_bpd sweep: hypervolume of the front (MNIST)",
         f"{r['ratio']:.2f}x", "reported", "-"),
    ]  # fmt: skip


ROWS: dict[str, Callable[[dict], list[Row]]] = {
    "quickstart": quickstart,
    "trainer_speed": trainer_speed,
    "platform_overhead": platform_overhead,
    "scale": scale,
    "search_replay": search_replay,
    "search_live": search_live,
    "seed_mlp_tf": seed_mlp_tf,
    "seed_keras_conv": seed_keras_conv,
    "cluster_scaling": cluster_scaling,
    "gpu_packing": gpu_packing,
    "rate_distortion": rate_distortion,
}


def section() -> str:
    lines = [
        "| benchmark | measured | target | | commit |",
        "|---|---|---|---|---|",
    ]
    for name, rows in ROWS.items():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            lines.append(f"| {name} | not run yet | | | |")
            continue
        result = json.loads(path.read_text())
        mode = "" if result.get("mode", "full") == "full" else f" ({result['mode']} run)"
        for what, measured, target, verdict in rows(result):
            lines.append(
                f"| {what}{mode} | {measured} | {target} | {verdict} | {result['commit']} |"
            )
    return f"""
## At a glance

From `benchmarks/results/*.json` by `python benchmarks/summary.py`; each figure's section
below says how it was measured and what limits it.

{chr(10).join(lines)}
"""


def main() -> None:
    write_section("summary", section(), first=True)


if __name__ == "__main__":
    main()
