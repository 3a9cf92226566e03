"""Issue 5's learning check: SeCo pre-training on the made seasonal world gives a better linear probe than random init.

The one learning check a CPU can run (about 5 minutes on 2 cores). The pre-training locations are
parcel mosaics whose colour follows the season; the probe's images are single land covers on random
days, so a representation that learned "same place, any season" separates them with few labels.
The configuration is `python -m benchmarks.learning`'s; its figures per seed, label budget and
probe length are in benchmarks/RESULTS.md. This test uses a seed the benchmark table does not.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from benchmarks.learning import SIZE, made_eurosat, pretrain, probe_accuracies, random_init
from jobs.evaluate.reference_inputs import transform_for
from tests.conftest import ROOT

QUEUE = 1024
# Three standard errors of an accuracy near 0.8 on the 1000 test images: a gain the noise does not make.
MARGIN = 3 * math.sqrt(0.8 * 0.2 / 1000)


@pytest.mark.slow
# A hang guard, not a speed check: 1200 CPU steps took 287 s on one 2-core machine and passed 600 s on another
@pytest.mark.timeout(1800)
def test_seco_pretraining_beats_random_init_in_a_ten_label_linear_probe():
    transform = transform_for("eurosat", "modern", SIZE, torch.device("cpu"))
    data = made_eurosat(train_per_class=10, test_per_class=100)
    random = probe_accuracies(random_init(), data, transform, [10], [100])["10/100"]

    encoder, final_loss = pretrain(seed=2, steps=1200, count=256, parcel_count=5, batch=32, queue=QUEUE, method="seco")
    pretrained = probe_accuracies(encoder, data, transform, [10], [100])["10/100"]

    chance = 3 * math.log(QUEUE + 1)  # three sub-spaces, one positive among QUEUE negatives each
    assert final_loss < chance - 3, f"the contrastive loss stayed near chance: {final_loss:.2f} vs {chance:.2f}"
    assert pretrained > random + MARGIN, f"SeCo {pretrained:.3f} vs random init {random:.3f} (margin {MARGIN:.3f})"


def test_the_band_comparison_probes_each_set_per_seed_and_reports_the_mean_difference_with_its_error():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.learning",
            "--bands",
            "rgb,all",
            "--seeds",
            "3",
            "4",
            "--steps",
            "2",
            "--locations",
            "8",
            "--batch",
            "4",
            "--queue",
            "8",
            "--probe-epochs",
            "2",
            "--labels-per-class",
            "2",
            "--test-per-class",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    *seeds, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["seed"] for line in seeds] == [3, 4]
    for line in seeds:
        assert {name: run["bands"] for name, run in line["runs"].items()} == {"rgb": 3, "all": 12}
        assert all(0 <= run["probe"]["2/2"] <= 1 and 0 <= run["random"]["2/2"] <= 1 for run in line["runs"].values())
        gap = line["runs"]["all"]["probe"]["2/2"] - line["runs"]["rgb"]["probe"]["2/2"]
        assert line["difference"]["all - rgb"]["2/2"] == pytest.approx(gap, abs=1e-4)
    gaps = [line["difference"]["all - rgb"]["2/2"] for line in seeds]
    reported = summary["difference"]["all - rgb"]["2/2"]
    assert reported["mean"] == pytest.approx(sum(gaps) / 2, abs=1e-4)
    assert reported["standard_error"] == pytest.approx(abs(gaps[0] - gaps[1]) / 2, abs=1e-4)  # sd/sqrt(2) of two


def test_the_band_comparison_refuses_a_set_it_does_not_know_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.learning", "--bands", "rgb,nir"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 2 and "'rgb,nir': give two or more distinct of rgb, all" in result.stderr
