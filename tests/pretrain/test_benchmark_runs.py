import json
import subprocess
import sys

from tests.conftest import ROOT


def test_pretrain_benchmark_measures_both_paths_and_reports_json():
    result = subprocess.run([sys.executable, "-m", "benchmarks.pretrain", "--backbones", "resnet18", "--batch", "2",
                             "--steps", "1", "--workers", "0"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    entry = report["resnet18"]
    assert entry["samples_per_s"] > 0 and entry["baseline_samples_per_s"] > 0
    assert abs(entry["speedup"] - entry["samples_per_s"] / entry["baseline_samples_per_s"]) < 0.02  # rounding
