"""Recipe multispectral: a 12-band run evaluated on the made 13-band EuroSAT and OSCD and 12-band BigEarthNet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jobs.evaluate import datasets, reference_inputs
from jobs.localcloud import bigearthnet, eurosat, oscd
from jobs.pretrain import checkpoints
from jobs.pretrain.seco import SeCo
from secoctl import plan, report, store
from secoctl.backends.local.executor import LocalExecutor
from secoctl.model_card import input_description
from secoctl.spec import SENTINEL2_BANDS
from secoctl.spec.file import load_documents
from tests.conftest import run_cli

SPEC = """
apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {{name: ms-eval}}
spec:
  collect: {{source: stac, stacUrl: "http://127.0.0.1:1", locations: 4, patchSize: 32, workers: 1}}
  pretrain: {{backbone: resnet18, nodes: 1, gpusPerNode: 0, batchSize: 16, inputSize: 64, queueSize: 64,
             inputBands: all}}
  evaluate:
    - {{task: eurosat, protocol: linear, recipe: multispectral, epochs: 3, dataPath: "{data}", baselines: [random]}}
    - {{task: bigearthnet, protocol: linear, recipe: multispectral, epochs: 3, dataPath: "{ben}", baselines: [random]}}
    - {{task: oscd, recipe: multispectral, epochs: 1, dataPath: "{oscd}", baselines: [random]}}
"""


def test_the_twelve_l2a_bands_map_onto_the_l1c_sets_by_name_without_b10():
    for task in ("eurosat", "oscd"):
        indices = datasets.band_indices(task, SENTINEL2_BANDS)
        assert [datasets.DATASET_BANDS[task][i] for i in indices] == list(SENTINEL2_BANDS)
        assert datasets.DATASET_BANDS[task].index("B10") not in indices and len(indices) == 12
    assert datasets.band_indices("eurosat", ["B8A"]) == [12]  # the EuroSAT release stores B8A last
    assert datasets.band_indices("bigearthnet", SENTINEL2_BANDS) == list(range(12))
    assert datasets.band_indices("bigearthnet", ["B04", "B03", "B02"]) == [3, 2, 1]


def test_a_model_sees_its_own_bands_of_the_made_eurosat_stretched_as_its_metadata_says(tmp_path: Path):
    root = eurosat.make(tmp_path, {"train": 1})
    image = datasets.open_split("eurosat", str(root), "train", False, datasets.DATASET_BANDS["eurosat"])[0]["image"]
    assert image.shape == (13, 64, 64)
    described = input_description(32, SENTINEL2_BANDS)
    seen = reference_inputs.own_input("eurosat", described, torch.device("cpu"))(image)
    assert seen.shape == (12, 32, 32)
    without_b10 = image[[0, 1, 2, 3, 4, 5, 6, 7, 12, 8, 10, 11]]  # B01-B08, B8A, B09, B11, B12
    low, high = (torch.tensor([described["stretch"][b][i] for b in SENTINEL2_BANDS]).view(12, 1, 1) for i in (0, 1))
    unit = torch.round(((without_b10 - low) / (high - low)).clamp(0, 1) * 255) / 255
    expected = torch.nn.functional.interpolate(unit[None], size=(32, 32), mode="bilinear", antialias=True)[0]
    assert torch.allclose(seen, expected.clamp(0, 1), atol=1e-6)  # mean 0, std 1: no further normalisation


def test_bigearthnet_rgb_is_b04_b03_b02_of_its_twelve_bands(tmp_path: Path):
    root = bigearthnet.make(tmp_path, {"train": 1, "val": 1, "test": 1})
    every = datasets.open_split("bigearthnet", str(root), "train", False, datasets.DATASET_BANDS["bigearthnet"])
    rgb = datasets.open_split("bigearthnet", str(root), "train", False)
    assert every[0]["image"].shape[0] == 12 and torch.equal(rgb[0]["image"], every[0]["image"][[3, 2, 1]])


def test_a_twelve_band_run_is_evaluated_on_every_band_it_was_trained_on(tmp_path: Path, storage: Path):
    data = eurosat.make(tmp_path / "eurosat", {"train": 4, "val": 1, "test": 2})
    ben = bigearthnet.make(tmp_path / "bigearthnet", {"train": 12, "val": 3, "test": 4})
    changes = oscd.make(tmp_path / "oscd", {"train": 1, "test": 1}, size=96)
    experiment = load_documents(SPEC.format(data=data, ben=ben, oscd=changes), "ms.yaml")[0]
    executor = LocalExecutor(storage.as_uri())
    experiment = executor.prepare(experiment)
    root = executor.location(experiment)
    torch.manual_seed(1)
    state = SeCo("resnet18", queue_size=64).state_dict()
    state["encoder_q.0.weight"] = torch.randn(64, 12, 7, 7) * 0.05  # the 12-band stem pretrain would train
    checkpoints.save(
        store.join(root, "pretrain", "checkpoints"),
        7,
        {"model": state, "step": 7, "method": "seco", "backbone": "resnet18"},
    )
    for name in ("collect", "shards", "pretrain"):
        stage = plan.stage(experiment, name, single_machine=True)
        store.write_json(store.join(root, name, "_SUCCESS"), {"fingerprint": stage.fingerprint, "completed_at": 0})
    executor.run_stage(experiment, plan.stage(experiment, "evaluate", single_machine=True))
    for key, metric, dataset_bands in (
        ("eurosat-linear-100pct-multispectral", "accuracy", 13),
        ("bigearthnet-linear-100pct-multispectral", "mAP", 12),
        ("oscd-finetune-100pct-multispectral", "f1", 13),
    ):
        record = store.read_json(store.join(root, "evaluate", key, "metrics.json"))
        assert record["recipe"] == "multispectral" and len(record["dataset_bands"]) == dataset_bands
        assert set(record["results"]) == {"this-run", "random"}
        assert all(r["bands"] == list(SENTINEL2_BANDS) and 0 <= r[metric] <= 1 for r in record["results"].values())
    result = run_cli("report", "ms-eval", storage=storage)
    assert result.returncode == 0, result.stderr
    assert "multispectral" in result.stdout and "SSL4EO-S12" not in result.stdout  # resnet18 matches no figure


def test_an_rgb_recipe_refuses_a_run_that_reads_more_than_rgb(tmp_path: Path):
    spec = SPEC.replace(
        'recipe: multispectral, epochs: 3, dataPath: "{data}"', "recipe: modern, epochs: 3, dataPath: x"
    )
    path = tmp_path / "ms.yaml"
    path.write_text(spec.format(data="x", ben="x", oscd="x"))
    result = run_cli("validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "spec.evaluate[0].recipe: recipe modern feeds B04, B03, B02 but this run reads 12 bands" in result.stderr
    assert result.stderr.rstrip().endswith("use recipe: multispectral")


def ms_record(task: str, metric: str, protocol: str = "finetune", fraction: float = 1.0, **results: dict) -> dict:
    return {
        "task": task,
        "protocol": protocol,
        "recipe": "multispectral",
        "label_fraction": fraction,
        "metric": metric,
        "metrics": [metric],
        "backbone": "resnet50",
        "results": results,
    }


TWELVE = {"backbone": "resnet50", "pretraining": None, "bands": list(SENTINEL2_BANDS)}
RGB = {"backbone": "resnet50", "pretraining": None, "bands": ["B04", "B03", "B02"]}


def test_ssl4eo_s12_figures_stand_beside_a_twelve_band_resnet50_fine_tuned_on_every_label():
    metrics = {
        "e": ms_record(
            "eurosat", "accuracy", **{"this-run": {**TWELVE, "accuracy": 0.98}, "imagenet": {**RGB, "accuracy": 0.97}}
        ),
        "b": ms_record("bigearthnet", "mAP", **{"this-run": {**TWELVE, "mAP": 0.9}}),
    }
    rows = {(r.evaluation, r.model): r for r in report.rows(metrics)}
    assert rows["e", "this-run"].paper == 0.991 and rows["b", "this-run"].paper == 0.918
    assert report.paper_cell(rows["e", "this-run"]) == "0.9910 (-0.0110) SSL4EO-S12"
    assert rows["e", "imagenet"].paper is None  # RGB input is not the anchor's
    assert any(
        n.startswith("SSL4EO-S12 figures: zhu-xlab/SSL4EO-S12@2156913c README.md line 26")
        for n in report.notes(list(rows.values()))
    )


@pytest.mark.parametrize("change", [{"protocol": "linear"}, {"fraction": 0.1}])
def test_another_protocol_or_fraction_matches_no_ssl4eo_s12_figure(change: dict):
    record = ms_record("eurosat", "accuracy", **change, **{"this-run": {**TWELVE, "accuracy": 0.98}})
    assert report.rows({"e": record})[0].paper is None


def test_the_rgb_recipes_never_show_ssl4eo_s12_figures():
    record = {**ms_record("eurosat", "accuracy", **{"this-run": {**TWELVE, "accuracy": 0.98}}), "recipe": "modern"}
    assert report.rows({"e": record})[0].paper is None
