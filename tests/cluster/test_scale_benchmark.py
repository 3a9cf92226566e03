"""`python -m benchmarks.scale` in a small configuration: its code path, and what it checks, not its figures."""

from __future__ import annotations

import pytest

from benchmarks import scale


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """Module-scoped, so it finds the cached cluster binaries before the tests' HOME is isolated."""
    return scale.run(experiments=2, nodes=6, workers=3, poll_s=1.0, timeout_s=300,
                     workdir=tmp_path_factory.mktemp("scale"))


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
