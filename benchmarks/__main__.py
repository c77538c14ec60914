"""Run every benchmark, each in its own process, and regenerate docs/BENCHMARKS.md.

    python -m benchmarks --quick          # every benchmark's few-minute variant
    python -m benchmarks                  # the full runs (hours on 2 CPU cores)
    python -m benchmarks --only trainer_speed platform_overhead

Each script writes benchmarks/results/<name>.json and its own section of docs/BENCHMARKS.md,
then benchmarks/summary.py the table of targets at its top;
docs/RELIABILITY.md comes from `python benchmarks/reliability.py` (it runs the fault tests).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = str(HERE.parent.parent / "shared" / "data")
# name -> (extra arguments of the full run, the --quick run)
BENCHMARKS = {
    "trainer_speed": ([], ["--quick"]),
    "data_pipeline": (["--images", "10000"], ["--images", "2000"]),
    "train_mnist": (
        ["--data-root", DATA, "--epochs", "5"],
        ["--data-root", DATA, "--epochs", "1"],
    ),
    "gpu_packing": ([], ["--quick"]),
    "platform_overhead": ([], ["--quick"]),
    "scale": ([], ["--quick"]),
    "cluster_scaling": (["--trials", "8"], ["--trials", "4"]),
    "search_efficiency": (["--data-root", DATA], ["--data-root", DATA, "--quick"]),
    # on benchmarks/curves/, recorded once: `python benchmarks/curves.py record` (55 min)
    "search_replay": ([], ["--seeds", "2", "--method", "tpe_asha_all"]),
    "search_live": (["--data-root", DATA], ["--data-root", DATA, "--seeds", "1", "--trials", "2"]),
    "seed_mlp_tf": ([], ["--quick"]),
    "seed_keras_conv": ([], ["--quick"]),
    "seed_study": ([], ["--quick"]),
    "seed_celeba": ([], ["--quick"]),
    "quickstart": ([], ["--", "--num-samples", "2", "--max-epochs", "2"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="the few-minute variants")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME")
    args = parser.parse_args()
    failed = []
    for name in args.only or BENCHMARKS:
        full, quick = BENCHMARKS[name]
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"benchmarks: {name}: no {script.name}, skipped", file=sys.stderr)
            continue
        start = time.perf_counter()
        print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
        code = subprocess.run([sys.executable, str(script), *(quick if args.quick else full)])
        took = time.perf_counter() - start
        print(f"benchmarks: {name} exit {code.returncode} in {took:.0f} s", file=sys.stderr)
        if code.returncode:
            failed.append(name)
    subprocess.run([sys.executable, str(HERE / "summary.py")], check=True)  # the targets table
    if failed:
        print(f"benchmarks: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
