"""examples/quickstart-study.yaml end to end, offline, as the Makefile's quickstart runs the quickstart: its
variants run on one shared dataset, collected and converted once, each evaluated, and `report STUDY` has a
row per variant beside the baselines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from secoctl import plan
from secoctl.spec.file import load_files

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STUDY = "quickstart-study"


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_quickstart_study_collects_once_and_reports_every_variant(tmp_path: Path):
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("SECOCTL_STORAGE", None)
    env.pop("XDG_DATA_HOME", None)
    storage = tmp_path / ".local/share/secoctl"

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1400)

    spec = "examples/quickstart-study.yaml"
    applied = run(
        sys.executable,
        "-m",
        "jobs.localcloud",
        "run",
        "--spec",
        spec,
        "--",
        str(BIN / "secoctl"),
        "apply",
        "--local",
        spec,
    )
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    variants = load_files([ROOT / spec])
    assert len(variants) >= 2
    # The first variant collects and converts; every later one finds both complete and skips them.
    assert applied.stderr.count("collect: running") == 1 and applied.stderr.count("shards: running") == 1
    assert applied.stderr.count("collect: complete, skipped") == len(variants) - 1
    for stage in ("collect", "shards"):
        named = {plan.dataset_name(plan.stage(v, stage)) for v in variants}
        assert len(named) == 1, named
        dataset = storage / "datasets" / named.pop()
        index = json.loads((dataset / "index.json").read_text())
        assert len(index["parts"]) == variants[0].spec.collect.workers  # each part committed once
        assert len(list((dataset / "parts").iterdir())) == variants[0].spec.collect.workers
    status = run(str(BIN / "secoctl"), "status", STUDY, "-o", "json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert {r["experiment"] for r in rows} == {v.name for v in variants}
    assert {r["state"] for r in rows} == {"complete"}
    for variant in variants:
        evaluated = storage / "experiments" / variant.name / "evaluate"
        assert list(evaluated.glob("*/metrics.json")), variant.name
    report = run(str(BIN / "secoctl"), "report", STUDY)
    assert report.returncode == 0, report.stderr
    for variant in variants:
        assert variant.metadata.study.variant in report.stdout
    assert "random" in report.stdout
    listed = run(str(BIN / "secoctl"), "datasets")
    assert listed.returncode == 0 and all(v.name in listed.stdout for v in variants), listed.stdout
    print(applied.stderr[-4000:])
