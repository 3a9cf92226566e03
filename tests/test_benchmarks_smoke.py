"""Every `python -m benchmarks.X` at its smallest size: it finishes and prints its figures (values are not checked).

benchmarks.scale needs a control plane of its own, so its run is the slow test in
tests/cluster/test_scale_benchmark.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SMALLEST = {
    "cli": ["--runs", "1"],
    "collect": ["--locations", "4", "--curve", "1", "--curve-locations", "4"],
    "learning": [
        "--seeds",
        "0",
        "--steps",
        "2",
        "--locations",
        "8",
        "--batch",
        "4",
        "--queue",
        "16",
        "--probe-epochs",
        "1",
        "--labels-per-class",
        "2",
        "--test-per-class",
        "2",
    ],
    "pretrain": [
        "--batch",
        "2",
        "--steps",
        "1",
        "--backbones",
        "resnet18",
        "--input",
        "64",
        "--locations",
        "8",
        "--loader-samples",
        "16",
    ],
}
RUN_ELSEWHERE = {"scale"}
# Per benchmark: the lines its figures are printed on (prefixes), and the keys of its last line, JSON.
FIGURES = {
    "cli": (
        ["secoctl render", "secoctl validate", "secoctl status", "python -c pass: median"],
        {"median_s", "per_command_median_s", "python_c_pass_median_s", "runs", "torch_imported"},
    ),
    "collect": (
        ["stage: 2 locations", "stage: 4 locations", "baseline: ", "curve: ", "throttled: "],
        {
            "patches_per_s",
            "baseline_patches_per_s",
            "speedup",
            "bound_patches_per_s",
            "fraction_of_bound",
            "peak_rss_mb_by_locations",
            "curve",
            "throttled",
        },
    ),
    "learning": ([], {"seed", "method", "steps", "final_loss", "pretrain_s", "probe"}),
    "pretrain": (
        ['{"record (before)": ', "resnet18 batch 2: "],
        {"loader", "encodings", "input", "steps", "resnet18 batch 2"},
    ),
}


def test_every_benchmark_module_has_a_smoke_run():
    modules = {path.stem for path in (ROOT / "benchmarks").glob("*.py") if path.stem != "__init__"}
    assert modules == set(SMALLEST) | RUN_ELSEWHERE


@pytest.mark.parametrize("name", sorted(SMALLEST))
def test_the_benchmark_runs_to_its_last_line_at_its_smallest_size(name: str):
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *SMALLEST[name]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=500,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    prefixes, keys = FIGURES[name]
    for prefix in prefixes:
        assert any(line.startswith(prefix) for line in lines), f"no line starting {prefix!r} in:\n{result.stdout}"
    assert keys <= set(json.loads(lines[-1]))
