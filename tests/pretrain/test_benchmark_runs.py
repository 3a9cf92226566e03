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
    # Each figure is rounded to 2 decimals: the speedup lies within what the unrounded rates allow
    # (a fixed tolerance failed on a busy machine, where rates near 0.5/s make rounding count).
    fast, slow, half = entry["samples_per_s"], entry["baseline_samples_per_s"], 0.005
    assert (fast - half) / (slow + half) - half <= entry["speedup"] <= (fast + half) / (slow - half) + half


def test_learning_benchmark_pretrains_and_probes_against_random_init():
    result = subprocess.run([sys.executable, "-m", "benchmarks.learning", "--seeds", "3", "--steps", "2",
                             "--locations", "16", "--batch", "8", "--queue", "16", "--probe-epochs", "2",
                             "--labels-per-class", "1", "3", "--test-per-class", "3"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert set(report["probe"]) == {"1/2", "3/2"}
    probe = report["probe"]["3/2"]
    assert report["seed"] == 3 and 0 <= probe["pretrained"] <= 1 and 0 <= probe["random"] <= 1
    assert abs(probe["gain"] - (probe["pretrained"] - probe["random"])) < 1e-3
