"""validate's advice on a pretrain node's disk: a cache smaller than an epoch still trains, but the shards
its ranks fetch ahead are kept whatever the budget, so those must fit the node's ephemeralStorage."""

from __future__ import annotations

from pathlib import Path

from secoctl.spec.advice import fetch_ahead_warning, warnings
from secoctl.spec.file import load_documents
from tests.conftest import ROOT

SPEC = """apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {{name: small-disk}}
spec:
  collect: {{locations: 1000, samplesPerShard: 64}}
  pretrain: {{nodes: 1, gpusPerNode: 8, loaderWorkers: {ahead}, resources: {{ephemeralStorage: {disk}}}}}
"""


def experiment(ahead: int, disk: str):
    return load_documents(SPEC.format(ahead=ahead, disk=disk), "small-disk.yaml")[0]


def test_shards_fetched_ahead_that_outgrow_the_nodes_disk_are_warned_about_with_the_fix():
    line = fetch_ahead_warning(experiment(ahead=8, disk="2Gi"))
    assert line is not None and line.startswith("spec.pretrain.loaderWorkers: 8 rank(s) a node, each holding 9")
    assert "ephemeralStorage 2Gi" in line and "at least 5Gi" in line and "\n" not in line
    assert fetch_ahead_warning(experiment(ahead=8, disk="5Gi")) is None
    assert fetch_ahead_warning(experiment(ahead=1, disk="2Gi")) is None  # 8 ranks × 2 shards of 67 MB


def test_no_example_is_warned_about_its_fetch_ahead():
    for path in sorted(Path(ROOT, "examples").glob("*.yaml")):
        for document in load_documents(path.read_text(), path.name):
            assert not any(line.startswith("spec.pretrain.loaderWorkers") for line in warnings(document)), path
