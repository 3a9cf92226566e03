"""`python -m benchmarks.scale` in a small configuration: its code path, what it checks and prints, not its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Read at import, before each test's HOME is isolated: the command finds the cached cluster binaries there.
CACHE_HOME = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
SMALLEST = ["--experiments", "2", "--nodes", "6", "--workers", "3", "--poll", "1", "--timeout-s", "300"]


@pytest.fixture(scope="module")
def run():
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", *SMALLEST],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "XDG_CACHE_HOME": CACHE_HOME, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def result(run) -> dict:
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.slow  # a control plane, Kueue and a few nodes of its own, about a minute on two cores
def test_the_scale_benchmark_runs_every_experiment_to_the_end_and_counts_what_it_measured(result):
    assert not result["timed_out"] and result["experiments_complete"] == 2
    assert result["drivers_failed"] == 0 and result["status_failures"] == []
    stages = 5  # collect, shards, pretrain, evaluate, publish
    assert result["stage_jobs"] == result["stage_jobs_complete"] == 2 * stages
    assert result["stage_pods_succeeded"] == 2 * (3 + 3 + 1 + 6 + 1) and result["stage_pods_failed"] == 0
    assert result["kueue"]["jobs_handed_to_kueue"] == result["kueue"]["admitted"] == 2 * stages
    assert result["kueue"]["never_admitted"] == []
    # Each driver started each of its stage Jobs with one PATCH, and polled them.
    assert result["drivers_own"]["job_patches"] == 2 * stages and result["drivers_own"]["requests"] > 2 * stages
    verbs = {(r["verb"], r["resource"]) for r in result["requests_apply"]["by_verb_resource"]}
    assert ("APPLY", "jobs") in verbs and ("APPLY", "configmaps") in verbs
    assert result["status_rows"] == 2 * (stages + 1)  # and each experiment's driver row
    assert result["apiserver_rss_mib"]["peak"] >= result["apiserver_rss_mib"]["end"] > 0


@pytest.mark.slow
def test_the_scale_benchmark_prints_its_report_before_its_json(run, result):
    lines = run.stdout.splitlines()
    for prefix in (
        "2 experiments, 6 kwok nodes, collect at 3 parts",
        "apply: min ",
        "requests_apply: ",
        "requests_drivers: ",
        "requests_status_all: ",
        "the drivers' own: ",
        "status (all): ",
        "apiserver RSS: peak ",
        "load average (1 min): ",
        "kueue: ",
        "experiments complete 2/2",
    ):
        assert any(line.startswith(prefix) for line in lines), f"no line starting {prefix!r}"
