"""The README's main job end to end, offline: what `make quickstart` runs, in a fresh HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from secoctl import collapse

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_quickstart_ends_with_pulled_loadable_weights_and_a_report(tmp_path: Path):
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("SECOCTL_STORAGE", None)
    env.pop("XDG_DATA_HOME", None)

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=840)

    applied = run(
        sys.executable,
        "-m",
        "jobs.localcloud",
        "run",
        "--spec",
        "examples/quickstart.yaml",
        "--",
        str(BIN / "secoctl"),
        "apply",
        "--local",
        "examples/quickstart.yaml",
    )
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    status = run(str(BIN / "secoctl"), "status", "quickstart", "-o", "json")
    assert status.returncode == 0 and status.stdout.count('"complete"') == 5, (
        status.stdout
    )  # collect, shards, pretrain, evaluate, publish
    assert all(row["alert"] == "" for row in json.loads(status.stdout)), "the quickstart does not collapse"
    history = [
        json.loads(line)
        for line in (tmp_path / ".local/share/secoctl/experiments/quickstart/pretrain/metrics.jsonl")
        .read_text()
        .splitlines()
    ]
    runs = [collapse.low_logs(history[:end], 128) for end in range(1, len(history) + 1)]
    assert max(runs) < collapse.ALARM_LOGS, [collapse.lowest_std(r) for r in history]  # at no log, not only the last
    report = run(str(BIN / "secoctl"), "report", "quickstart")
    assert report.returncode == 0 and "this-run" in report.stdout and "random" in report.stdout
    # Seeded (spec.pretrain.seed), so a machine repeats its run. Measured here: 0.697 against random's
    # 0.573 (seed 0), and 0.668 with seed 1; 0.645 with issue 26's training shards and batched augmentation
    # (2026-12-02, cold CI); 1000 test images, so one standard error is about 1.5 points
    # per model. Five points is over two standard errors of the difference below the smallest gain seen.
    metrics = json.loads(
        (
            tmp_path / ".local/share/secoctl/experiments/quickstart/evaluate/eurosat-linear-100pct-modern/metrics.json"
        ).read_text()
    )["results"]
    assert set(metrics) == {"this-run", "random"}
    assert metrics["this-run"]["accuracy"] - metrics["random"]["accuracy"] >= 0.05, metrics
    pulled = run(str(BIN / "secoctl"), "weights", "pull", "seco-resnet18-quickstart", "-o", str(tmp_path / "w"))
    assert pulled.returncode == 0 and (tmp_path / "w" / "model.safetensors").exists()
    loaded = run(
        sys.executable,
        "-c",
        "from secoctl.weights import load; import torch; "
        "m, t = load('seco-resnet18-quickstart'); print(tuple(m(t(torch.zeros(1, 3, 64, 64))).shape))",
    )
    assert loaded.stdout.strip() == "(1, 512)", loaded.stderr
