"""Evaluate and publish after a pretrain checkpoint written by the pretrain stage's own code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jobs.evaluate import datasets
from jobs.localcloud import bigearthnet, eurosat, oscd
from jobs.pretrain import checkpoints
from jobs.pretrain.seco import SeCo
from secoctl import plan, store, weights
from secoctl.backends.local.executor import LocalExecutor, StageFailed
from secoctl.spec.file import load_documents
from secoctl.weights.backbone_keys import from_encoder_q
from tests.conftest import run_cli

SPEC = """
apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {{name: eval-test}}
spec:
  collect: {{source: stac, stacUrl: "http://127.0.0.1:1", locations: 4, patchSize: 32, bands: [B02, B03, B04],
            workers: 1}}
  pretrain: {{backbone: resnet18, nodes: 1, gpusPerNode: 0, batchSize: 16, inputSize: 64, queueSize: 64}}
  evaluate:
    - {{task: eurosat, protocol: linear, epochs: 15, dataPath: "{data}", baselines: [random]}}
    - {{task: eurosat, protocol: linear, recipe: modern, epochs: 5, dataPath: "{data}", baselines: [random]}}
    - {{task: bigearthnet, protocol: linear, labelFraction: 0.5, epochs: 10, dataPath: "{ben}", baselines: [random]}}
    - {{task: bigearthnet, protocol: finetune, epochs: 1, dataPath: "{ben}", baselines: [random]}}
    - {{task: oscd, epochs: 2, dataPath: "{oscd}", baselines: [random]}}
  publish: {{name: eval-test-rn18, version: "1"}}
"""


@pytest.fixture
def trained(tmp_path: Path, storage: Path):
    """An experiment whose pretrain stage committed a checkpoint; the EuroSAT-layout set beside it."""
    data = eurosat.make(tmp_path / "eurosat", {"train": 8, "val": 2, "test": 4})
    ben = bigearthnet.make(tmp_path / "bigearthnet", {"train": 24, "val": 6, "test": 10})
    changes = oscd.make(tmp_path / "oscd", {"train": 2, "test": 1})
    experiment = load_documents(SPEC.format(data=data, ben=ben, oscd=changes), "eval.yaml")[0]
    executor = LocalExecutor(storage.as_uri())
    experiment = executor.prepare(experiment)
    root = executor.location(experiment)
    torch.manual_seed(1)
    model = SeCo("resnet18", queue_size=64)
    checkpoints.save(
        store.join(root, "pretrain", "checkpoints"),
        7,
        {"model": model.state_dict(), "step": 7, "method": "seco", "backbone": "resnet18"},
    )
    for name in ("collect", "shards", "pretrain"):
        stage = plan.stage(experiment, name, single_machine=True)
        store.write_json(store.join(root, name, "_SUCCESS"), {"fingerprint": stage.fingerprint, "completed_at": 0})
    return executor, experiment, root, model, data


def test_the_report_compares_this_run_with_its_baseline(trained, storage: Path):
    executor, experiment, root, _, _ = trained
    executor.run_stage(experiment, plan.stage(experiment, "evaluate", single_machine=True))
    record = store.read_json(store.join(root, "evaluate", "eurosat-linear-100pct", "metrics.json"))
    assert set(record["results"]) == {"this-run", "random"}
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["test_samples"] == 40 for r in record["results"].values())
    modern = store.read_json(store.join(root, "evaluate", "eurosat-linear-100pct-modern", "metrics.json"))
    assert modern["recipe"] == "modern" and all(r["test_samples"] == 40 for r in modern["results"].values())
    linear = store.read_json(store.join(root, "evaluate", "bigearthnet-linear-50pct", "metrics.json"))
    assert linear["metric"] == "mAP" and all(
        r["train_samples"] == 12 and r["test_samples"] == 10 for r in linear["results"].values()
    )
    finetuned = store.read_json(store.join(root, "evaluate", "bigearthnet-finetune-100pct", "metrics.json"))
    assert finetuned["protocol"] == "finetune" and all(0 < r["mAP"] <= 1 for r in finetuned["results"].values())
    changes = store.read_json(store.join(root, "evaluate", "oscd-finetune-100pct", "metrics.json"))
    assert all(
        set(r) >= {"precision", "recall", "f1", "f1_global"} and r["test_pixels"] == 128 * 128
        for r in changes["results"].values()
    )
    assert changes["recipe"] == "paper" and "per batch" in changes["definitions"]["f1"]
    assert "standard" in changes["definitions"]["f1_global"]
    assert changes["results"]["this-run"]["pretraining"] is None  # 4 locations is no paper pre-training set
    result = run_cli("report", "eval-test", storage=storage)
    assert result.returncode == 0, result.stderr
    assert "this-run" in result.stdout and "random" in result.stdout
    assert store.exists(store.join(root, "evaluate", "report.png"))
    table = store.read_text(store.join(root, "evaluate", "report.md"))
    assert "| eurosat-linear-100pct | accuracy | random |" in table
    assert (
        "| bigearthnet-finetune-100pct | mAP | this-run |" in table
        and "| oscd-finetune-100pct | f1 | random |" in table
    )


def test_a_corrupt_dataset_file_fails_naming_the_file(trained):
    executor, experiment, root, _, data = trained
    victim = next((data / eurosat.BASE_DIR / "Forest").glob("*.tif"))
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(StageFailed) as failure:
        executor.run_stage(experiment, plan.stage(experiment, "evaluate", single_machine=True))
    assert victim.name in failure.value.log_tail and "Re-extract" in failure.value.log_tail
    assert victim.name in failure.value.message  # the one line names the file and the entry to fix
    assert failure.value.message.endswith(f": check spec.evaluate[{failure.value.index}].dataPath")
    assert not store.exists(store.join(root, "evaluate", "eurosat-linear-100pct", "metrics.json"))


def test_a_corrupt_oscd_band_fails_naming_the_city(tmp_path: Path):
    root = oscd.make(tmp_path / "oscd", {"train": 2, "test": 1}, size=64)
    victim = next((root / oscd.IMAGES).glob("*/imgs_2_rect/B03.tif"))
    victim.write_bytes(b"not a tiff")
    split = "test" if (root / oscd.LABELS.format(split="Test") / victim.parts[-3]).exists() else "train"
    with pytest.raises(datasets.DatasetError, match=f"cannot read {victim.parts[-3]}.*torchgeo.datasets.OSCD"):
        datasets.scenes("oscd", datasets.open_split("oscd", str(root), split, download=False))


def test_a_missing_dataset_says_how_to_fetch_it(tmp_path: Path):
    with pytest.raises(datasets.DatasetError, match="bigearthnet is not in .*dataPath.*BigEarthNet"):
        datasets.open_split("bigearthnet", str(tmp_path), "train", download=False)


def test_publish_writes_the_query_encoder_under_torchvision_names(trained, storage: Path):
    executor, experiment, root, model, _ = trained
    executor.run_stage(experiment, plan.stage(experiment, "publish", single_machine=True))
    loaded, transform = weights.load("eval-test-rn18:1", storage=storage.as_uri())
    state = model.state_dict()
    for name, key in from_encoder_q(state).items():
        torch.testing.assert_close(loaded.state_dict()[name], state[key])
    item = weights.show(storage.as_uri(), "eval-test-rn18")
    assert item["properties"]["secoctl:provenance"]["checkpoint_step"] == 7
    assert item["properties"]["secoctl:input"]["size"] == 64
    assert transform(torch.zeros(3, 32, 32)).shape == (3, 64, 64)
    # A second publish of the same version by another spec is refused: versions are immutable.
    with pytest.raises(Exception, match="immutable"):
        weights.publish(storage.as_uri(), "eval-test-rn18", "1", {})
    assert (
        json.loads(run_cli("weights", "show", "eval-test-rn18:1", storage=storage).stdout)["id"] == "eval-test-rn18-1"
    )
