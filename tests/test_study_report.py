"""`secoctl report STUDY`: a row per variant (mean ± standard error over seeds) and per baseline, a column per
evaluation, the paper's figures beside ours with their protocol and source."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from secoctl import report, store
from secoctl.errors import UserError
from secoctl.report import study
from secoctl.spec.file import load_documents
from secoctl.tree import experiment_uri
from tests.conftest import run_cli

SEEDS = {"seco": {0: 0.90, 1: 0.92, 2: 0.97}, "moco": {0: 0.80, 1: 0.84}}


def record(task: str, metric: str, fraction: float = 1.0, protocol: str = "linear", **results: dict) -> dict:
    return {
        "task": task,
        "protocol": protocol,
        "recipe": "paper",
        "label_fraction": fraction,
        "metric": metric,
        "metrics": [metric],
        "backbone": "resnet18",
        "results": results,
        "definitions": {metric: f"how {metric} is computed"},
    }


def metrics(variant: str, seed: int) -> dict:
    """A made run of the variant: EuroSAT for every seed; OSCD for seed 0 only; random and imagenet beside it."""
    pretraining = "seco-1m" if variant == "seco" else None
    this_run = {"backbone": "resnet18", "pretraining": pretraining}
    found = {
        "eurosat-linear-100pct": record(
            "eurosat",
            "accuracy",
            **{
                "this-run": {**this_run, "accuracy": SEEDS[variant][seed]},
                "random": {"accuracy": 0.40 + seed / 100, "backbone": "resnet18", "pretraining": None},
                "imagenet": {"accuracy": 0.85, "backbone": "resnet18", "pretraining": None},
            },
        )
    }
    if seed == 0:
        found["oscd-finetune-100pct"] = record(
            "oscd", "f1", protocol="finetune", **{"this-run": {**this_run, "f1": 0.5}}
        )
    return found


def members() -> list[study.Member]:
    return [
        study.Member(f"table-{variant}-s{seed}", variant, seed, metrics(variant, seed))
        for variant in SEEDS
        for seed in SEEDS[variant]
    ]


def test_a_variant_row_is_the_mean_and_standard_error_over_its_seeds():
    table = study.table("table", members())
    seco = next(row for row in table.rows if row.label == "seco")
    cell = seco.cells["eurosat-linear-100pct", "accuracy"]
    values = list(SEEDS["seco"].values())
    assert seco.n == cell.n == 3 and cell.mean == pytest.approx(statistics.fmean(values))
    assert cell.standard_error == pytest.approx(statistics.stdev(values) / math.sqrt(3))
    assert study.cell_text(cell, 3).startswith(
        f"{statistics.fmean(values):.4f} ± {statistics.stdev(values) / math.sqrt(3):.4f}"
    )
    oscd = seco.cells["oscd-finetune-100pct", "f1"]
    assert oscd.standard_error is None and study.cell_text(oscd, 3).startswith("0.5000 (n=1)")


def test_rows_are_the_variants_then_the_baselines_pooled_over_every_run_of_them():
    table = study.table("table", members())
    assert [(row.label, row.kind, row.n) for row in table.rows] == [
        ("seco", "variant", 3),
        ("moco", "variant", 2),
        ("random", "baseline", 5),
        ("imagenet", "baseline", 5),
    ]
    assert table.columns == [("eurosat-linear-100pct", "accuracy"), ("oscd-finetune-100pct", "f1")]
    random = table.rows[2].cells["eurosat-linear-100pct", "accuracy"]
    assert random.values == pytest.approx([0.40, 0.41, 0.42, 0.40, 0.41])
    assert study.cell_text(table.rows[3].cells.get(("oscd-finetune-100pct", "f1")), 5) == study.MISSING


def test_the_papers_figure_stands_beside_the_seco_row_with_its_protocol_and_source():
    table = study.table("table", members())
    seco, moco = table.rows[0], table.rows[1]
    figure = seco.cells["eurosat-linear-100pct", "accuracy"].figure
    assert figure is not None and figure.value == 0.9314 and figure in report.PAPER
    mean = statistics.fmean(SEEDS["seco"].values())
    assert study.cell_text(seco.cells["eurosat-linear-100pct", "accuracy"], 3).endswith(
        f" · paper 0.9314 ({mean - 0.9314:+.4f})"
    )
    assert seco.cells["oscd-finetune-100pct", "f1"].figure.value == 0.4694
    assert moco.cells["eurosat-linear-100pct", "accuracy"].figure is None  # the paper's figure is SeCo's
    notes = "\n".join(table.notes)
    assert "eurosat-linear-100pct accuracy: how accuracy is computed" in notes
    assert (
        "paper figure beside seco, eurosat-linear-100pct accuracy: eurosat linear, 100% labels, resnet18 "
        f"pre-trained on seco-1m; source: {report.TORCHGEO}"
    ) in notes


def test_baselines_of_different_backbones_are_rows_of_their_own():
    first = study.Member("a", "small", 0, metrics("moco", 0))
    larger = metrics("moco", 1)
    for result in larger["eurosat-linear-100pct"]["results"].values():
        result["backbone"] = "resnet50"
    table = study.table("t", [first, study.Member("b", "large", 0, larger)])
    assert [row.label for row in table.rows] == [
        "small",
        "large",
        "random (resnet18)",
        "imagenet (resnet18)",
        "random (resnet50)",
        "imagenet (resnet50)",
    ]


def test_markdown_has_a_column_per_evaluation_and_a_row_per_variant_and_baseline():
    text = study.markdown(study.table("table", members()))
    lines = text.splitlines()
    assert lines[2] == "| model | n | eurosat-linear-100pct accuracy | oscd-finetune-100pct f1 |"
    assert [line.split(" | ")[0] for line in lines[4:8]] == ["| seco", "| moco", "| random", "| imagenet"]
    assert "source: torchgeo docs/api/weights/sentinel2.csv" in text
    assert study.chart_png(study.table("table", members())).startswith(b"\x89PNG")


def test_the_cli_finds_a_studys_variants_by_their_stored_labels_and_writes_the_report(storage: Path):
    study_text = (Path(__file__).resolve().parents[1] / "examples" / "quickstart-study.yaml").read_text()
    from secoctl.render import spec_document

    for experiment in load_documents(study_text, "quickstart-study.yaml"):
        root = experiment_uri(storage.as_uri(), experiment.name)
        store.write_text(store.join(root, "spec.yaml"), spec_document(experiment))
        store.write_json(
            store.join(root, "evaluate", "eurosat-linear-100pct", "metrics.json"),
            metrics(experiment.metadata.study.variant, 0)["eurosat-linear-100pct"],
        )
    other = experiment_uri(storage.as_uri(), "quickstart-study-extra")  # named like one, no study label
    store.write_text(
        store.join(other, "spec.yaml"),
        "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: quickstart-study-extra}\nspec: {}\n",
    )
    result = run_cli("report", "quickstart-study", storage=storage)
    assert result.returncode == 0, result.stderr
    written = store.read_text(study.report_uri(storage.as_uri(), "quickstart-study"))
    rows = [line.split(" | ")[0].removeprefix("| ") for line in written.splitlines() if line.startswith("| ")]
    assert rows == ["model", "moco", "seco", "random", "imagenet"]
    assert "0.9314" in result.stdout and "quickstart-study-extra" not in written
    assert store.exists(store.join(storage.as_uri(), "studies", "quickstart-study", "report.png"))


def test_a_name_that_is_neither_an_experiment_nor_a_study_is_still_refused(storage: Path):
    root = experiment_uri(storage.as_uri(), "solo")
    store.write_text(
        store.join(root, "spec.yaml"),
        "apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: solo}\nspec: {}\n",
    )
    result = run_cli("report", "nothing", storage=storage)
    assert result.returncode == 2 and "no experiment 'nothing'" in result.stderr


def test_a_study_without_results_yet_says_so_naming_its_experiments(storage: Path):
    waiting = [study.Member("table-seco", "seco", 0, {}), study.Member("table-moco", "moco", 0, {})]
    with pytest.raises(
        UserError,
        match="no variant of study table has evaluation results yet "
        r"\(table-seco, table-moco\)",
    ):
        study.show(storage.as_uri(), "table", waiting)
