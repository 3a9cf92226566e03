"""`inputBands: all` end to end on the made world, whose land covers each have a 12-band spectrum:
collect, training shards, pretrain, evaluate on the made 13-band EuroSAT (recipe multispectral) and publish
through the embedded executor, then the published weights loaded and exported as users do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jobs.common.shards import shard_entries
from jobs.common.training_shards import TrainingShard
from jobs.localcloud import eurosat
from jobs.localcloud.cloud import built_world, serve
from jobs.pretrain import checkpoints
from secoctl import store, weights
from secoctl.backends.local.executor import LocalExecutor
from secoctl.model_card import SSL4EO_RULE, stretch
from secoctl.spec import SENTINEL2_BANDS
from secoctl.spec.file import load_documents
from secoctl.tree import experiment_uri
from tests.conftest import run_cli

SPEC = """
apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {{name: every-band}}
spec:
  collect: {{source: stac, stacUrl: "{stac_url}", locations: 6, cities: 30, patchSize: 32, referenceDate: "2022-06-01",
            samplesPerShard: 3, workers: 1}}
  pretrain: {{backbone: resnet18, inputBands: all, maxSteps: 4, batchSize: 4, queueSize: 8, inputSize: 32,
             lrMilestones: [], loaderWorkers: 0, checkpointEverySteps: 4, bf16: false, nodes: 1, gpusPerNode: 0}}
  evaluate:
    - {{task: eurosat, protocol: linear, recipe: multispectral, epochs: 3, dataPath: "{eurosat}", baselines: [random]}}
  publish: {{name: every-band-rn18, version: "1"}}
"""


@pytest.mark.slow
def test_every_collected_band_reaches_the_model_and_the_published_weights_name_them(tmp_path: Path, storage: Path):
    data = eurosat.make(tmp_path / "eurosat", {"train": 3, "val": 1, "test": 2})
    collect = load_documents(SPEC.format(stac_url="http://127.0.0.1:1", eurosat=data), "every-band.yaml")[
        0
    ].spec.collect
    world = built_world(collect, tmp_path / "worlds", bands=SENTINEL2_BANDS)
    with serve(world) as cloud:
        experiment = load_documents(SPEC.format(stac_url=cloud.stac_url, eurosat=data), "every-band.yaml")[0]
        LocalExecutor(storage.as_uri()).apply(experiment)
    root = experiment_uri(storage.as_uri(), "every-band")

    from secoctl import plan
    from secoctl.stored import stage_tree

    shards = stage_tree(storage.as_uri(), "every-band", plan.stage(experiment, "shards", single_machine=True))
    shard = store.read_json(shards.index)
    first = TrainingShard(shard_entries(shard)[0]["uri"].removeprefix("file://"))
    assert first.locations[0]["shape"] == (12, 32, 32)
    assert first.location(0).std() > 0  # the made spectra reach the shards, not a constant

    state = checkpoints.latest(store.join(root, "pretrain", "checkpoints"))
    assert state["step"] == 4 and state["model"]["encoder_q.0.weight"].shape == (64, 12, 7, 7)

    record = store.read_json(store.join(root, "evaluate", "eurosat-linear-100pct-multispectral", "metrics.json"))
    assert record["recipe"] == "multispectral" and len(record["dataset_bands"]) == 13  # EuroSAT's L1C, B10 in it
    assert set(record["results"]) == {"this-run", "random"}
    assert all(r["bands"] == list(SENTINEL2_BANDS) and 0 <= r["accuracy"] <= 1 for r in record["results"].values())

    item = weights.show(storage.as_uri(), "every-band-rn18")
    published = item["properties"]["secoctl:metrics"]["eurosat-linear-100pct-multispectral"]["results"]
    assert published["this-run"]["accuracy"] == record["results"]["this-run"]["accuracy"]
    described = item["properties"]["secoctl:input"]
    assert described["bands"] == list(SENTINEL2_BANDS)
    assert described["stretch"]["B08"] == list(stretch("B08")) and described["stretch_rule"]["B08"] == SSL4EO_RULE
    assert described["mean"] == [0.0] * 12 and described["std"] == [1.0] * 12
    [model_input] = item["properties"]["mlm:input"]
    assert [band["name"] for band in model_input["bands"]] == list(SENTINEL2_BANDS)
    assert model_input["input"]["shape"] == [-1, 12, 32, 32]
    assert [s["type"] for s in model_input["value_scaling"]] == ["z-score"] * 12
    model, transform = weights.load("every-band-rn18", storage=storage.as_uri())
    features = model(transform(torch.full((2, 12, 40, 40), 1500.0)))
    assert features.shape == (2, 512) and torch.isfinite(features).all()

    exported = run_cli(
        "weights",
        "export",
        "every-band-rn18",
        "--format",
        "hf",
        "-o",
        str(tmp_path / "hf"),
        storage=storage,
        timeout=600,
    )
    assert exported.returncode == 0, exported.stderr
    card = (tmp_path / "hf" / "README.md").read_text()
    low, high = stretch("B8A")
    assert f"| B8A | {low:g} | {high:g} | 0 | 1 |" in card
    assert (
        f"| eurosat-linear-100pct-multispectral | accuracy | this-run | {published['this-run']['accuracy']:.4f} |"
        in card
    )
