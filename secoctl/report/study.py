"""`secoctl report STUDY`: a study's variants and baselines in one table, a column per evaluation.

A row per variant holds its runs' mean ± standard error over seeds (the sample standard deviation
over √n); a row per baseline (random, imagenet, published weights) pools every run of it across the
study's experiments, which all evaluate it alike. Each column is an evaluation's headline metric
(metrics.json's `metric`). A cell shows the paper's figure beside ours where report.paper_figure
matches one, and the notes name each figure's protocol and source. Members are found by their
stored spec's metadata.study, the seco.dev/study and seco.dev/variant labels.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from secoctl import report, store
from secoctl.errors import SpecError, UserError
from secoctl.spec import BUILTIN_BASELINES

THIS_RUN = "this-run"  # the pre-trained model's name in metrics.json (jobs/evaluate/backbones.THIS_RUN)
MISSING = "–"


@dataclass(frozen=True)
class Member:
    """One experiment of a study: its variant, seed and evaluation records (report.read_metrics)."""

    experiment: str
    variant: str
    seed: int
    metrics: dict[str, dict[str, Any]]


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    figure: report.PaperFigure | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def standard_error(self) -> float | None:
        return statistics.stdev(self.values) / math.sqrt(self.n) if self.n > 1 else None


@dataclass
class Row:
    label: str
    kind: str  # variant or baseline
    model: str
    backbone: str | None
    experiments: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.experiments)


@dataclass(frozen=True)
class StudyTable:
    study: str
    columns: list[tuple[str, str]]  # (evaluation, metric)
    rows: list[Row]
    notes: list[str]


def table(study: str, members: list[Member]) -> StudyTable:
    """The study's table from its members' metrics: variants in the order given, then baselines."""
    columns = sorted({(key, record["metric"]) for member in members for key, record in member.metrics.items()})
    backbones = {
        result.get("backbone")
        for member in members
        for record in member.metrics.values()
        for result in record["results"].values()
    }
    rows: dict[tuple[str, str, str | None], Row] = {}
    definitions: dict[str, None] = {}
    for member in members:
        for key, record in sorted(member.metrics.items()):
            metric = record["metric"]
            if record.get("definitions", {}).get(metric):
                definitions[f"{key} {metric}: {record['definitions'][metric]}"] = None
            for model, result in record["results"].items():
                backbone = result.get("backbone")
                if model == THIS_RUN:
                    row_key, label, kind = ("variant", member.variant, None), member.variant, "variant"
                else:
                    row_key, kind = ("baseline", model, backbone), "baseline"
                    label = model if len(backbones) == 1 else f"{model} ({backbone})"
                row = rows.setdefault(row_key, Row(label, kind, model, backbone))
                if member.experiment not in row.experiments:
                    row.experiments.append(member.experiment)
                cell = row.cells.setdefault((key, metric), Cell())
                cell.values.append(float(result[metric]))
                figure = report.paper_figure(record, metric, result)
                cell.figure = figure if cell.n == 1 or cell.figure == figure else None
    baselines = sorted((row for row in rows.values() if row.kind == "baseline"), key=_baseline_order)
    ordered = [row for row in rows.values() if row.kind == "variant"] + baselines
    return StudyTable(study, columns, ordered, [*definitions, *_figure_notes(ordered)])


def _baseline_order(row: Row) -> tuple[str, int, str]:
    """By backbone; within one, random then imagenet as the paper's tables list them, published weights after."""
    builtin = BUILTIN_BASELINES.index(row.model) if row.model in BUILTIN_BASELINES else len(BUILTIN_BASELINES)
    return str(row.backbone), builtin, row.model


def _figure_notes(rows: list[Row]) -> list[str]:
    """One line per paper figure the table shows: the protocol it was measured under and where it was read."""
    lines: dict[str, None] = {}
    for row in rows:
        for (key, metric), cell in row.cells.items():
            figure = cell.figure
            if figure is not None:
                anchor = "SSL4EO-S12" if figure in report.SSL4EO_S12 else "paper"
                lines[
                    (
                        f"{anchor} figure beside {row.label}, {key} {metric}: {figure.task} {figure.protocol}, "
                        f"{round(figure.label_fraction * 100)}% labels, {figure.backbone} pre-trained on "
                        f"{figure.pretraining}; source: {figure.source}"
                    )
                ] = None
    return list(lines)


def cell_text(cell: Cell | None, row_n: int) -> str:
    """`mean ± SE`, `(n=k)` where fewer runs than the row's have this evaluation, the paper's figure after `·`."""
    if cell is None or not cell.n:
        return MISSING
    text = f"{cell.mean:.4f}" + ("" if cell.standard_error is None else f" ± {cell.standard_error:.4f}")
    if cell.n != row_n:
        text += f" (n={cell.n})"
    if cell.figure is not None:
        anchor = "paper" if cell.figure not in report.SSL4EO_S12 else "SSL4EO-S12"
        text += f" · {anchor} {cell.figure.value:.4f} ({cell.mean - cell.figure.value:+.4f})"
    return text


HEADER_NOTE = (
    "mean ± standard error over a row's runs (seeds; a baseline's runs are every experiment's), "
    "n: runs; · the published figure for the same protocol (ours − it)"
)


def header(study_table: StudyTable) -> list[str]:
    return ["model", "n", *(f"{key} {metric}" for key, metric in study_table.columns)]


def cells(study_table: StudyTable) -> list[list[str]]:
    return [
        [row.label, str(row.n), *(cell_text(row.cells.get(column), row.n) for column in study_table.columns)]
        for row in study_table.rows
    ]


def markdown(study_table: StudyTable) -> str:
    names = header(study_table)
    lines = [
        f"# {study_table.study}: downstream evaluation of the study",
        "",
        "| " + " | ".join(names) + " |",
        "|" + "---|" * len(names),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells(study_table)]
    lines += ["", f"- {HEADER_NOTE}", *(f"- {note}" for note in study_table.notes)]
    return "\n".join(lines) + "\n"


def chart_png(study_table: StudyTable) -> bytes:
    import io

    import matplotlib.pyplot as plt

    figure = chart_figure(study_table)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def chart_figure(study_table: StudyTable):
    """Bars per row in each evaluation's group, each with its mean written on it, standard errors as error bars,
    the paper's figures as black ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns, rows = study_table.columns, study_table.rows
    width = 0.8 / max(len(rows), 1)
    figure, axis = plt.subplots(figsize=(2.0 + 0.9 * len(columns) * max(len(rows), 1) / 2, 3.6))
    ticks = []
    for r, row in enumerate(rows):
        positions = [c + r * width for c in range(len(columns))]
        present = [(x, row.cells[column]) for x, column in zip(positions, columns) if row.cells.get(column)]
        bars = axis.bar(
            [x for x, _ in present],
            [cell.mean for _, cell in present],
            width,
            label=row.label,
            yerr=[cell.standard_error or 0.0 for _, cell in present],
            capsize=2,
        )
        axis.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
        ticks += [(x, cell.figure.value) for x, cell in present if cell.figure is not None]
    if ticks:
        axis.scatter(*zip(*ticks), marker="_", s=200, color="black", zorder=3, label="published figure")
    axis.set_xticks(
        [c + width * (len(rows) - 1) / 2 for c in range(len(columns))],
        [f"{key}\n{metric}" for key, metric in columns],
        fontsize=7,
    )
    axis.set_ylim(0, 1.08)  # room for the labels over a bar at 1
    axis.set_ylabel(f"mean {report.Y_LABEL}", fontsize=8)
    axis.set_title(f"{study_table.study}: downstream evaluation")
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=min(len(rows) + 1, 4), frameon=False)
    figure.tight_layout()
    return figure


def members(root: str, study: str) -> list[Member]:
    """The stored experiments expanded from `study`, by variant then seed, each with its evaluation records.

    A stored spec that cannot be read is left out here; `secoctl status` names it.
    """
    from secoctl.stored import stored_experiment
    from secoctl.tree import experiment_uri as located
    from secoctl.tree import experiments_uri

    found = []
    for name in store.list_names(experiments_uri(root)):
        experiment_uri = located(root, name)
        try:
            experiment = stored_experiment(experiment_uri)
        except (SpecError, UserError):
            continue
        if experiment is None or experiment.metadata.study is None or experiment.metadata.study.name != study:
            continue
        found.append(
            Member(
                name,
                experiment.metadata.study.variant,
                experiment.spec.pretrain.seed,
                report.read_metrics(experiment_uri),
            )
        )
    return sorted(found, key=lambda member: (member.variant, member.seed))


def report_uri(root: str, study: str) -> str:
    return store.join(root, "studies", study, "report.md")


def show(root: str, study: str, found: list[Member]) -> None:
    """Print the study's table and its notes; write it as report.md and report.png under <storage>/studies/."""
    from rich.console import Console
    from rich.table import Table

    study_table = table(study, [member for member in found if member.metrics])
    if not study_table.rows:
        raise UserError(
            f"no variant of study {study} has evaluation results yet "
            f"({', '.join(member.experiment for member in found)}); "
            "`secoctl status` shows where they stand"
        )
    from secoctl.text import cell, safe

    rich_table = Table(title=cell(f"{study}: downstream evaluation of the study"))
    for name in header(study_table):
        rich_table.add_column(cell(name))
    for row in cells(study_table):  # variant names and metrics come from stored specs and results: data
        rich_table.add_row(*map(cell, row))
    Console().print(rich_table)
    for note in (HEADER_NOTE, *study_table.notes):
        print(safe(note))
    markdown_uri = report_uri(root, study)
    store.write_text(markdown_uri, markdown(study_table))
    store.write_bytes(store.join(root, "studies", study, "report.png"), chart_png(study_table))
    print(f"written: {markdown_uri} and report.png beside it")


def show_stored(storage: str, name: str) -> list[str]:
    """`secoctl report NAME`: an experiment's report, or a study's (a row per variant) when NAME is a study."""
    from secoctl.stored import named
    from secoctl.tree import experiment_names

    with store.reported(storage):
        if name not in experiment_names(storage):
            variants = members(storage, name)
            if variants:
                show(storage, name, variants)
                return []
    root, _ = named(storage, name)
    return report.show(name, root)
