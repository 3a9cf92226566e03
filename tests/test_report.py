"""`secoctl report`'s paper column: a figure only where task, protocol, fraction, recipe, backbone and set match."""

from __future__ import annotations

from pathlib import Path

import pytest

from secoctl import report, store
from tests.conftest import run_cli


def record(
    task: str = "eurosat",
    protocol: str = "linear",
    recipe: str = "paper",
    fraction: float = 1.0,
    metric: str = "accuracy",
    **results: dict,
) -> dict:
    return {
        "task": task,
        "protocol": protocol,
        "recipe": recipe,
        "label_fraction": fraction,
        "metric": metric,
        "metrics": [metric],
        "backbone": "resnet18",
        "results": results,
        "definitions": {metric: f"how {metric} is computed"},
    }


def paper_of(metrics: dict, model: str) -> float | None:
    return next(r.paper for r in report.rows(metrics) if r.model == model)


def test_every_recorded_figure_cites_its_source_and_is_a_fraction():
    assert report.PAPER and all(0 < f.value < 1 and "2103.16607" in f.source for f in report.PAPER)
    assert {(f.task, f.metric, f.value) for f in report.PAPER} == {
        ("eurosat", "accuracy", 0.9314),
        ("oscd", "f1", 0.4694),
    }


def test_a_seco_1m_resnet18_under_the_paper_recipe_is_shown_beside_the_paper():
    seco = {"accuracy": 0.91, "backbone": "resnet18", "pretraining": "seco-1m"}
    metrics = {"eurosat-linear-100pct": record(**{"this-run": seco, "random": {"accuracy": 0.5, "pretraining": None}})}
    rows = {r.model: r for r in report.rows(metrics)}
    assert rows["this-run"].paper == 0.9314 and rows["this-run"].difference == pytest.approx(0.91 - 0.9314)
    assert report.paper_cell(rows["this-run"]) == "0.9314 (-0.0214)"
    assert rows["random"].paper is None and report.paper_cell(rows["random"]) == "not recorded"


@pytest.mark.parametrize("change", [{"recipe": "modern"}, {"fraction": 0.1}, {"protocol": "finetune"}])
def test_another_recipe_fraction_or_protocol_matches_no_figure(change: dict):
    seco = {"accuracy": 0.91, "backbone": "resnet18", "pretraining": "seco-1m"}
    assert paper_of({"k": record(**change, **{"this-run": seco})}, "this-run") is None


@pytest.mark.parametrize(
    "result",
    [
        {"backbone": "resnet50", "pretraining": "seco-1m"},
        {"backbone": "resnet18", "pretraining": "seco-100k"},
        {"backbone": "resnet18", "pretraining": None},
    ],
)
def test_another_backbone_or_pretraining_set_matches_no_figure(result: dict):
    assert paper_of({"k": record(**{"this-run": {"accuracy": 0.9, **result}})}, "this-run") is None


def test_the_cli_prints_the_difference_the_definitions_and_the_source(storage: Path):
    root = store.join(storage.as_uri(), "experiments", "paper-test")
    store.write_text(
        store.join(root, "spec.yaml"),
        "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: paper-test}\nspec: {}\n",
    )
    seco = {"f1": 0.45, "backbone": "resnet18", "pretraining": "seco-1m"}
    store.write_json(
        store.join(root, "evaluate", "oscd-finetune-100pct", "metrics.json"),
        record("oscd", "finetune", metric="f1", **{"seco-resnet18-1m": seco}),
    )
    result = run_cli("report", "paper-test", storage=storage)
    assert result.returncode == 0, result.stderr
    assert "0.4694 (-0.0194)" in result.stdout and "how f1 is computed" in result.stdout
    assert "torchgeo docs/api/weights/sentinel2.csv" in result.stdout
    table = store.read_text(store.join(root, "evaluate", "report.md"))
    assert "| oscd-finetune-100pct | f1 | seco-resnet18-1m | 0.4500 | 0.4694 (-0.0194) |" in table
