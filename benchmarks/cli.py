"""Median wall time of `secoctl render examples/<each>.yaml`, a fresh process each run.

    python -m benchmarks.cli [--runs 15]

The last line is JSON: per example and overall medians in seconds, and whether torch was imported.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def time_command(argv: list[str], runs: int) -> list[float]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
        timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    secoctl = [sys.executable, "-m", "secoctl"]
    results = {}
    every = []
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        timings = time_command([*secoctl, "render", str(example.relative_to(ROOT))], args.runs)
        every.extend(timings)
        results[example.name] = round(statistics.median(timings), 4)
        print(f"secoctl render {example.name}: median {results[example.name]:.3f} s over {args.runs} runs")
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, secoctl.cli, secoctl.render, secoctl.backends.local; "
                               "print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    print(json.dumps({"median_s": round(statistics.median(every), 4), "per_example_median_s": results,
                      "runs": args.runs, "torch_imported": probe.stdout.strip() == "True"}))


if __name__ == "__main__":
    main()
