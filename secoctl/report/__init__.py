"""`secoctl report`: every evaluation of an experiment, this run beside its baselines and the paper.

Reads `evaluate/<task>/metrics.json`; writes the same table as Markdown and a bar chart next to
them. A paper figure is shown for a row only when task, protocol, label fraction, recipe, backbone
and pre-training set all match a figure in PAPER, each with the stored source it was read from. Under
recipe multispectral, SSL4EO-S12's published figures (SSL4EO_S12) stand in the same column for a model
fed 12 or more bands, where task, protocol, label fraction, backbone and metric match.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from secoctl import store
from secoctl.errors import UserError

# torchgeo's table of pre-trained Sentinel-2 weights, which cites arXiv 2103.16607 for these figures.
TORCHGEO = (
    "torchgeo docs/api/weights/sentinel2.csv (microsoft/torchgeo@1a7c2b77), row "
    "ResNet18_Weights.SENTINEL2_RGB_SECO, citing arXiv 2103.16607; the paper's own table was not "
    "in the stored copies"
)


@dataclass(frozen=True)
class PaperFigure:
    task: str
    protocol: str  # linear or finetune
    label_fraction: float
    backbone: str
    pretraining: str  # seco-100k or seco-1m; ssl4eo-s12 for SSL4EO_S12 (matched by bands, not by set)
    metric: str
    value: float  # as our metrics.json holds it: a fraction, not a percentage
    source: str


# Only figures read from a stored source. torchgeo's SeCo ResNet-18 weights are the seco_resnet18_1m
# encoder (its Hugging Face repo torchgeo/resnet18_sentinel2_rgb_seco uploaded
# seco_resnet18_1m_encoder.ckpt); EuroSAT has one protocol in the reference (a linear probe on every
# label) and OSCD one (a U-Net on the frozen encoder). torchgeo's BigEarthNet figures (ResNet-18 87.27,
# ResNet-50 87.81) name neither probe nor fine-tuning nor label fraction, so they match no row.
PAPER = (
    PaperFigure("eurosat", "linear", 1.0, "resnet18", "seco-1m", "accuracy", 0.9314, TORCHGEO),
    PaperFigure("oscd", "finetune", 1.0, "resnet18", "seco-1m", "f1", 0.4694, TORCHGEO),
)


# zhu-xlab/SSL4EO-S12@2156913c README.md line 26 (Pre-trained models, MoCo ResNet50: BigEarthNet 91.8%, EuroSAT
# 99.1%). Each figure links its script, scripts/benchmark/srun_ft_moco_rn50_s2c_{BE,EU}.sh: every layer fine-tuned
# (--linear commented out) on every label (--train_frac 1.0) for 100 epochs, from MoCo on SSL4EO-S12's 13 L1C bands.
SSL4EO_README = "zhu-xlab/SSL4EO-S12@2156913c README.md line 26 (MoCo ResNet50, 13 L1C bands, fine-tuned, 100% labels)"
SSL4EO_S12 = (
    PaperFigure(
        "eurosat",
        "finetune",
        1.0,
        "resnet50",
        "ssl4eo-s12",
        "accuracy",
        0.991,
        f"{SSL4EO_README}; EuroSAT: srun_ft_moco_rn50_s2c_EU.sh, scored on its own stratified 80/20 split "
        "(linear_EU_moco.py line 152), not torchgeo's test split; SGD lr 0.1, RandomResizedCrop 224",
    ),
    PaperFigure(
        "bigearthnet",
        "finetune",
        1.0,
        "resnet50",
        "ssl4eo-s12",
        "mAP",
        0.918,
        f"{SSL4EO_README}; BigEarthNet: srun_ft_moco_rn50_s2c_BE.sh, 12 bands with zeros for B10 "
        "(linear_BE_moco.py lines 333-335), micro-AP per batch averaged on SeCo's val split "
        "(lines 403-408); ours is micro-AP over every test sample",
    ),
)
MULTISPECTRAL_BANDS = 12  # a model fed fewer bands than BigEarthNet's 12 is not the anchor's kind of input
# Every metric the evaluations report (accuracy, F1, mAP) lies in [0, 1], higher better; each group names its own.
Y_LABEL = "score (metric under each group; higher is better)"


@dataclass(frozen=True)
class ReportRow:
    evaluation: str
    metric: str
    model: str
    value: float
    paper: float | None
    source: str | None = None
    definition: str | None = None
    anchor: str = "paper"

    @property
    def difference(self) -> float | None:
        return None if self.paper is None else self.value - self.paper


def ssl4eo_figure(record: dict[str, Any], metric: str, result: dict[str, Any]) -> PaperFigure | None:
    """SSL4EO-S12's figure for a model fed 12 bands or more, if task, protocol, fraction, backbone and metric match."""
    if len(result.get("bands", ())) < MULTISPECTRAL_BANDS:
        return None
    return next(
        (
            f
            for f in SSL4EO_S12
            if (f.task, f.protocol, f.backbone, f.metric)
            == (record.get("task"), record.get("protocol"), result.get("backbone", record.get("backbone")), metric)
            and f.label_fraction == record.get("label_fraction")
        ),
        None,
    )


def paper_figure(record: dict[str, Any], metric: str, result: dict[str, Any]) -> PaperFigure | None:
    """The paper's figure for one model's result, if the record and the model match one exactly; under recipe
    multispectral, SSL4EO-S12's."""
    if record.get("recipe") == "multispectral":
        return ssl4eo_figure(record, metric, result)
    if record.get("recipe") != "paper":
        return None
    return next(
        (
            f
            for f in PAPER
            if (f.task, f.protocol, f.backbone, f.metric)
            == (record.get("task"), record.get("protocol"), result.get("backbone", record.get("backbone")), metric)
            and f.label_fraction == record.get("label_fraction")
            and f.pretraining == result.get("pretraining")
        ),
        None,
    )


def read_metrics(experiment_uri: str) -> dict[str, dict[str, Any]]:
    root = store.join(experiment_uri, "evaluate")
    found = {}
    for key in store.list_names(root):
        uri = store.join(root, key, "metrics.json")
        if store.exists(uri):
            found[key] = store.read_json(uri)
    return found


def rows(metrics: dict[str, dict[str, Any]]) -> list[ReportRow]:
    result = []
    for key, record in sorted(metrics.items()):
        definitions = record.get("definitions", {})
        for metric in record.get("metrics", [record["metric"]]):
            for model, values in record["results"].items():
                figure = paper_figure(record, metric, values)
                result.append(
                    ReportRow(
                        key,
                        metric,
                        model,
                        float(values[metric]),
                        figure.value if figure else None,
                        figure.source if figure else None,
                        definitions.get(metric),
                        "SSL4EO-S12" if figure in SSL4EO_S12 else "paper",
                    )
                )
    return result


def paper_cell(row: ReportRow) -> str:
    if row.paper is None:
        return "not recorded"
    return f"{row.paper:.4f} ({row.difference:+.4f})" + ("" if row.anchor == "paper" else f" {row.anchor}")


def notes(report_rows: list[ReportRow]) -> list[str]:
    """One line per metric definition and per paper source the table uses."""
    definitions = dict.fromkeys(f"{r.evaluation} {r.metric}: {r.definition}" for r in report_rows if r.definition)
    sources = dict.fromkeys(f"{r.anchor} figures: {r.source}" for r in report_rows if r.source)
    return [*definitions, *sources]


def markdown(name: str, report_rows: list[ReportRow]) -> str:
    lines = [
        f"# {name}: downstream evaluation",
        "",
        "| evaluation | metric | model | value | paper (value − paper) |",
        "|---|---|---|---|---|",
    ]
    for row in report_rows:
        lines.append(f"| {row.evaluation} | {row.metric} | {row.model} | {row.value:.4f} | {paper_cell(row)} |")
    lines += ["", *(f"- {note}" for note in notes(report_rows))]
    return "\n".join(lines) + "\n"


def chart_png(name: str, report_rows: list[ReportRow]) -> bytes:
    import io

    import matplotlib.pyplot as plt

    figure = chart_figure(name, report_rows)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def chart_figure(name: str, report_rows: list[ReportRow]):
    """Bars per model in each (evaluation, metric) group, each with its value written on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from secoctl.text import one_line

    def label(text: str) -> str:
        """Stored text as a chart shows it: no control characters, and a '$' not read as mathtext."""
        return one_line(text).replace("$", r"\$")

    report_rows = [
        replace(r, evaluation=label(r.evaluation), metric=label(r.metric), model=label(r.model)) for r in report_rows
    ]
    name = label(name)
    groups = list(dict.fromkeys((r.evaluation, r.metric) for r in report_rows))
    models = list(dict.fromkeys(r.model for r in report_rows))
    figure, axis = plt.subplots(figsize=(1.8 + 1.6 * len(groups) * max(len(models), 1) / 2, 3.2))
    width = 0.8 / max(len(models), 1)
    for m, model in enumerate(models):
        values = [
            next((r.value for r in report_rows if (r.evaluation, r.metric) == g and r.model == model), 0.0)
            for g in groups
        ]
        bars = axis.bar([g + m * width for g in range(len(groups))], values, width, label=model)
        axis.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
    axis.set_xticks(
        [g + width * (len(models) - 1) / 2 for g in range(len(groups))],
        [f"{evaluation}\n{metric}" for evaluation, metric in groups],
        fontsize=7,
    )
    axis.set_ylim(0, 1.08)  # room for the labels over a bar at 1
    axis.set_ylabel(Y_LABEL, fontsize=8)
    axis.set_title(f"{name}: downstream evaluation")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def show(name: str, root: str) -> list[str]:
    """Print the experiment's evaluation table and write report.md and report.png beside its metrics; the
    lines left to say are returned."""
    from rich.console import Console
    from rich.table import Table

    report_rows = rows(read_metrics(root))
    if not report_rows:
        raise UserError(f"{name} has no evaluation results yet; `secoctl status {name}` shows where it stands")
    from secoctl.text import cell

    table = Table(
        "evaluation", "metric", "model", "value", "paper (value − paper)", title=cell(f"{name}: downstream evaluation")
    )
    for row in report_rows:  # metric and model names come from the stored results: data, not markup
        table.add_row(*map(cell, (row.evaluation, row.metric, row.model, f"{row.value:.4f}", paper_cell(row))))
    Console().print(table)
    markdown_uri = store.join(root, "evaluate", "report.md")
    store.write_text(markdown_uri, markdown(name, report_rows))
    store.write_bytes(store.join(root, "evaluate", "report.png"), chart_png(name, report_rows))
    return [*notes(report_rows), f"written: {markdown_uri} and report.png beside it"]
