"""`secoctl report`: every evaluation of an experiment, this run beside its baselines.

Reads `evaluate/<task>/metrics.json`; writes the same table as Markdown and a bar chart next to
them. Paper figures are shown only where they have been checked against the paper's tables;
none are recorded yet, and the column says so rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from secoctl import store

# (evaluation key, backbone) -> {(metric, model): value}, each cited to its table when filled.
PAPER: dict[tuple[str, str], dict[tuple[str, str], float]] = {}


@dataclass(frozen=True)
class ReportRow:
    evaluation: str
    metric: str
    model: str
    value: float
    paper: float | None


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
        paper = PAPER.get((key, record.get("backbone", "")), {})
        for metric in record.get("metrics", [record["metric"]]):
            for model, values in record["results"].items():
                result.append(ReportRow(key, metric, model, float(values[metric]), paper.get((metric, model))))
    return result


def markdown(name: str, report_rows: list[ReportRow]) -> str:
    lines = [f"# {name}: downstream evaluation", "", "| evaluation | metric | model | value | paper |",
             "|---|---|---|---|---|"]
    for row in report_rows:
        paper = f"{row.paper:.4f}" if row.paper is not None else "not recorded"
        lines.append(f"| {row.evaluation} | {row.metric} | {row.model} | {row.value:.4f} | {paper} |")
    return "\n".join(lines) + "\n"


def chart_png(name: str, report_rows: list[ReportRow]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r.evaluation, r.metric) for r in report_rows))
    models = list(dict.fromkeys(r.model for r in report_rows))
    figure, axis = plt.subplots(figsize=(1.8 + 1.6 * len(groups) * max(len(models), 1) / 2, 3.2))
    width = 0.8 / max(len(models), 1)
    for m, model in enumerate(models):
        values = [next((r.value for r in report_rows if (r.evaluation, r.metric) == g and r.model == model), 0.0)
                  for g in groups]
        axis.bar([g + m * width for g in range(len(groups))], values, width, label=model)
    axis.set_xticks([g + width * (len(models) - 1) / 2 for g in range(len(groups))],
                    [f"{evaluation}\n{metric}" for evaluation, metric in groups], fontsize=7)
    axis.set_ylim(0, 1)
    axis.set_title(f"{name}: downstream evaluation")
    axis.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()
