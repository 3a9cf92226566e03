import json
import subprocess
import sys

from tests.conftest import ROOT


def test_pretrain_benchmark_times_both_loaders_the_stage_path_and_the_model_only_ceiling():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.pretrain",
            "--backbones",
            "resnet18",
            "--batch",
            "2",
            "--steps",
            "1",
            "--locations",
            "8",
            "--loader-samples",
            "128",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    before, stage = report["loader"]["record (before)"], report["loader"]["training shards (stage)"]
    assert before["samples_per_cpu_s"] > 0 and stage["samples_per_cpu_s"] > 0
    # What each path reads per sample is a property of the formats, not of the machine.
    assert before["bytes_read_per_sample"] > 8_000_000  # the whole 5 x 12 x 264 px uint16 record
    assert stage["bytes_read_per_sample"] == 3 * 3 * 264 * 264  # seco's three drawn timestamps, RGB uint8
    assert stage["bytes_stored_per_location"] <= 1_100_000
    jpeg = report["encodings"]["jpeg q95 4:4:4"]
    assert 0 < jpeg["bytes_per_location"] < stage["bytes_stored_per_location"] and jpeg["max_abs_error"] > 0
    entry = report["resnet18 batch 2"]
    assert entry["model only, eager"]["samples_per_s"] > 0 and entry["stage path"]["samples_per_s"] > 0
    ratio = entry["stage path"]["samples_per_s"] / entry["model only, eager"]["samples_per_s"]
    assert abs(entry["stage / model-only"] - ratio) < 0.01 + 0.005 * ratio


def test_learning_benchmark_pretrains_and_probes_against_random_init():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.learning",
            "--seeds",
            "3",
            "--steps",
            "2",
            "--locations",
            "16",
            "--batch",
            "8",
            "--queue",
            "16",
            "--probe-epochs",
            "2",
            "--labels-per-class",
            "1",
            "3",
            "--test-per-class",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert set(report["probe"]) == {"1/2", "3/2"}
    probe = report["probe"]["3/2"]
    assert report["seed"] == 3 and 0 <= probe["pretrained"] <= 1 and 0 <= probe["random"] <= 1
    assert abs(probe["gain"] - (probe["pretrained"] - probe["random"])) < 1e-3
