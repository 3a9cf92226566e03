"""Start-up of the control plane: median wall time of `secoctl render`, `validate` and `status`.

    python -m benchmarks.cli [--runs 15]

Each run is a fresh process in a temporary HOME: `render` and `validate` read
examples/seco-1m.yaml, `status` lists an empty storage folder. Beside them, in the same run, the
floor (`python -c pass`) and, where kubectl is installed, its client-side equivalent of `render`.

Children share a private bytecode cache, warmed by one untimed run of each command, so the figures
are start-up as after `pip install` (which compiles bytecode) even where PYTHONDONTWRITEBYTECODE
is set or the environment holds no bytecode; otherwise every run would time the compiler.

The last line is JSON: medians in seconds (overall, per command, `python -c pass`, kubectl or null
when not installed), the runs per command, and whether any of the three commands imported torch.
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from secoctl.cache import cache_root

ROOT = Path(__file__).resolve().parents[1]
SPEC = "examples/seco-1m.yaml"
KUBECTL_ARGS = ["create", "deployment", "x", "--image=y", "--dry-run=client", "-o", "yaml"]


def time_command(argv: list[str], runs: int, env: dict[str, str]) -> list[float]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=ROOT, env=env)
        timings.append(time.perf_counter() - started)
    return timings


def imported_modules(argv: list[str], env: dict[str, str]) -> list[str]:
    """Every module `argv` imports, from `-X importtime`; also warms the bytecode cache."""
    result = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], check=True, capture_output=True, text=True, cwd=ROOT, env=env
    )
    return [
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and not line.endswith("| imported package")
    ]


def kubectl() -> str | None:
    """kubectl on PATH, else the one the cluster tests built, else None."""
    return shutil.which("kubectl") or next(iter(sorted(glob.glob(str(cache_root("cluster", "*", "kubectl"))))), None)


def median(timings: list[float]) -> float:
    return round(statistics.median(timings), 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="secoctl-bench-") as scratch:
        storage = Path(scratch, "storage")
        storage.mkdir()
        env = {**os.environ, "HOME": scratch, "PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": f"{scratch}/pycache"}
        for name in ("PYTHONDONTWRITEBYTECODE", "SECOCTL_STORAGE", "KUBECONFIG", "XDG_DATA_HOME"):
            env.pop(name, None)
        secoctl = [sys.executable, "-m", "secoctl"]
        commands = {
            f"render {SPEC}": ["render", SPEC],
            f"validate {SPEC}": ["validate", SPEC],
            "status --storage <empty folder>": ["status", "--storage", storage.as_uri()],
        }
        per_command, every, torch_imported = {}, [], False
        for label, command in commands.items():
            name, argv = command[0], [*secoctl, *command]
            modules = imported_modules(argv, env)
            torch_imported = torch_imported or "torch" in modules
            timings = time_command(argv, args.runs, env)
            every.extend(timings)
            per_command[name] = median(timings)
            print(
                f"secoctl {label}: median {per_command[name]:.3f} s over {args.runs} runs, "
                f"{len(modules)} modules imported"
            )
        python_pass = median(time_command([sys.executable, "-c", "pass"], args.runs, env))
        print(f"python -c pass: median {python_pass:.3f} s")
        kubectl_path, kubectl_median = kubectl(), None
        if kubectl_path:
            kubectl_median = median(time_command([kubectl_path, *KUBECTL_ARGS], args.runs, env))
            print(f"{kubectl_path} {' '.join(KUBECTL_ARGS)}: median {kubectl_median:.3f} s")
        else:
            print("kubectl: not installed")
    print(
        json.dumps(
            {
                "median_s": median(every),
                "per_command_median_s": per_command,
                "python_c_pass_median_s": python_pass,
                "kubectl_median_s": kubectl_median,
                "runs": args.runs,
                "torch_imported": torch_imported,
            }
        )
    )


if __name__ == "__main__":
    main()
