"""report.png (an experiment's and a study's): a y label, and each bar's value written on it."""

from __future__ import annotations

from matplotlib import pyplot as plt

from secoctl.report import Y_LABEL, ReportRow, chart_figure, study
from tests.test_study_report import members


def bar_texts(axis) -> list[str]:
    return [text.get_text() for text in axis.texts]


def test_the_experiment_chart_has_a_y_label_and_each_bar_its_value():
    rows = [
        ReportRow("eurosat-linear-100pct", "accuracy", "seco", 0.81234, 0.93),
        ReportRow("eurosat-linear-100pct", "accuracy", "random", 0.4567, None),
        ReportRow("oscd-finetune-100pct", "f1", "seco", 0.3, 0.46),
    ]
    figure = chart_figure("quick", rows)
    axis = figure.axes[0]
    assert axis.get_ylabel() == Y_LABEL
    assert sorted(bar_texts(axis)) == sorted(["0.812", "0.457", "0.300", "0.000"])  # random has no oscd: 0
    plt.close(figure)


def test_the_study_chart_has_a_y_label_and_each_bar_its_mean():
    table = study.table("table", members())
    figure = study.chart_figure(table)
    axis = figure.axes[0]
    assert axis.get_ylabel() == f"mean {Y_LABEL}"
    means = [cell.mean for row in table.rows for cell in row.cells.values() if cell]
    assert sorted(bar_texts(axis)) == sorted(f"{mean:.3f}" for mean in means)
    plt.close(figure)
