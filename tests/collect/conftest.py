"""A synthetic world of Sentinel-2-shaped scenes, built once per test session, served per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.collect import sampling
from jobs.localcloud.cloud import built_world
from secoctl import plan, store
from secoctl.backends.local.executor import LocalExecutor
from secoctl.spec.file import load_documents
from secoctl.stored import named_stage_tree

SPEC = """
apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {{name: collect-test}}
spec:
  collect:
    source: {source}
    stacUrl: "{stac_url}"
    locations: 12
    cities: 30
    patchSize: 32
    bands: [B02, B03, B04, B08]
    referenceDate: "2022-06-01"
    samplesPerShard: {per_shard}
    workers: {workers}
    inFlight: {in_flight}
  pretrain: {{backbone: resnet18, nodes: 1, gpusPerNode: 0, batchSize: 16}}
"""
MISSING_EVERY = 5  # locations 4 and 9 lack their last date
CORRUPT = frozenset({6})  # location 6's newest clear scene has a damaged red band


def experiment_for(stac_url: str, per_shard: int = 3, workers: int = 2, in_flight: int = 4, source: str = "stac"):
    """`source: planetary-computer` signs every read through the token service at PC_SDK_SAS_URL."""
    text = SPEC.format(stac_url=stac_url, per_shard=per_shard, workers=workers, in_flight=in_flight, source=source)
    return load_documents(text, "collect-test.yaml")[0]


def expected_outcomes(collect) -> dict[str, set[int]]:
    kept = sampling.kept_candidates(collect, collect.locations)
    outcome: dict[str, set[int]] = {
        "accepted": set(),
        "dropped_overlap": set(),
        "dropped_no_scene": set(),
        "failed": set(),
    }
    for index in range(collect.locations):
        if not kept[index]:
            outcome["dropped_overlap"].add(index)
        elif index % MISSING_EVERY == MISSING_EVERY - 1:
            outcome["dropped_no_scene"].add(index)
        elif index in CORRUPT:
            outcome["failed"].add(index)
        else:
            outcome["accepted"].add(index)
    return outcome


@pytest.fixture(scope="session")
def world_folder(tmp_path_factory) -> Path:
    collect = experiment_for("http://127.0.0.1:1").spec.collect
    return built_world(collect, tmp_path_factory.mktemp("worlds"), MISSING_EVERY, CORRUPT, bands=tuple(collect.bands))


def run_collect(experiment, storage: Path) -> dict:
    """The collect stage through the embedded executor; returns its committed index.json."""
    executor = LocalExecutor(storage.as_uri())
    experiment = executor.prepare(experiment)
    executor.run_stage(experiment, plan.stage(experiment, "collect", single_machine=True))
    return store.read_json(named_stage_tree(experiment, "collect").index)
