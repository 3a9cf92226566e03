"""Rows of `secoctl status`: where each stage stands, read from the storage tree.

A row carries everything (`-o json`, `-o wide`) and, for the 80-column table, one short phrase each
of progress (`brief`) and of what to read (`summary`: the collapse alarm, why it is not done, or
its first results).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from secoctl import collapse, plan
from secoctl.states import State, styled
from secoctl.text import cell
from secoctl.tree import StageFacts

SUMMARY_CHARS = 28  # what fits beside the other columns at 80
HEADLINE = ("accepted", "dropped", "failed", "loss", "embed_std")  # first in the summary (records sort their keys)
NOT_RESULTS = ("in_flight", "embed_std_low_logs")  # a pacing setting and the alarm's count: not in the summary


@dataclass(frozen=True)
class StageRow:
    experiment: str
    stage: str
    state: State
    progress: str
    metric: str
    age: str
    detail: str
    eta: str = ""
    eta_s: float | None = None
    alert: str = ""
    brief: str = ""
    summary: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def headers(wide: bool, several: bool) -> tuple[str, ...]:
        """`wide` carries every figure, metric and reason; the short table one phrase each, and the
        EXPERIMENT column only when there is more than one."""
        if wide:
            return "EXPERIMENT", "STAGE", "STATE", "PROGRESS", "ETA", "AGE", "METRIC", "DETAIL"
        return ("EXPERIMENT",) * several + ("STAGE", "STATE", "PROGRESS", "ETA", "AGE", "SUMMARY")

    def cells(self, wide: bool, several: bool) -> tuple[str, ...]:
        """Plain text each, as the widths are measured; `markup` adds the colours."""
        if wide:
            return (
                self.experiment,
                self.stage,
                self.state,
                self.progress,
                self.eta,
                self.age,
                " ".join([self.alert, *(pair(k, v) for k, v in self.metrics.items())]).strip(),
                self.detail,
            )
        return (self.experiment,) * several + (self.stage, self.state, self.brief, self.eta, self.age, self.summary)

    def markup(self, cells: tuple[str, ...], wide: bool, several: bool) -> list[Text]:
        """The cells as rich text: our colours on the state and the alert, every other text as it is."""
        shown = [cell(text) for text in cells]
        state = self.headers(wide, several).index("STATE")
        shown[state] = Text.from_markup(styled(self.state))
        if not wide and self.alert:
            shown[-1].stylize("red")
        return shown


def _age(seconds: float) -> str:
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@dataclass(frozen=True)
class StageProgress:
    done: float
    total: float
    unit: str


def stage_progress(stage: plan.Stage, facts: StageFacts) -> StageProgress | None:
    """How far a stage's parts have come together, from their progress records; None before any reports.

    The parts of a stage split its work, so their counts add up; the nodes of a distributed stage
    share it, each reporting the same global steps, so the slowest one speaks for all.
    """
    records = list(facts.progress.values())
    if not records:
        return None
    if stage.distributed:
        done, total = min(r.get("done", 0) for r in records), max(r.get("total", 0) for r in records)
    else:
        done, total = sum(r.get("done", 0) for r in records), sum(r.get("total", 0) for r in records)
    return StageProgress(done, total, records[0].get("unit", ""))


def progress_text(status: plan.StageStatus, facts: StageFacts) -> str:
    parts = f"{status.parts_done}/{status.stage.parts} parts"
    progress = stage_progress(status.stage, facts)
    if status.state == "complete" or progress is None:
        return parts
    percent = f" ({100 * progress.done / progress.total:.0f}%)" if progress.total else ""
    return f"{progress.done:g}/{progress.total:g} {progress.unit}{percent}, {parts}"


def progress_brief(status: plan.StageStatus, facts: StageFacts) -> str:
    """Progress in one short phrase: units and percent while running, parts otherwise."""
    progress = stage_progress(status.stage, facts)
    if status.state == "complete" or progress is None or not progress.total:
        return f"{status.parts_done}/{status.stage.parts} parts"
    return f"{progress.done:g}/{progress.total:g} {progress.unit} {100 * progress.done / progress.total:.0f}%"


def eta_seconds(stage: plan.Stage, facts: StageFacts, now: float) -> float | None:
    """Seconds left at the recent rate (each part's `per_s`), counted from the latest report; None
    until a working part has a rate. Summed parts add their rates; the nodes of a distributed stage
    share one count of steps, so the slowest one's rate holds for all."""
    progress = stage_progress(stage, facts)
    working = [r for i, r in facts.progress.items() if i not in facts.parts_done]
    rates = [r["per_s"] for r in working if isinstance(r.get("per_s"), (int, float)) and r["per_s"] > 0]
    if progress is None or not progress.total or not rates:
        return None
    rate = min(rates) if stage.distributed else sum(rates)
    reported_at = max(r.get("updated_at", now) for r in working)
    return max((progress.total - progress.done) / rate - (now - reported_at), 0.0)


def eta_fields(stage: plan.Stage, facts: StageFacts, now: float, running: bool) -> dict[str, Any]:
    """A row's `eta` (as `age` is written) and `eta_s`; empty unless the stage runs and has a rate."""
    seconds = eta_seconds(stage, facts, now) if running else None
    return {"eta": "" if seconds is None else _age(seconds), "eta_s": None if seconds is None else round(seconds, 1)}


def summary_text(metrics: dict[str, Any]) -> str:
    """The first results that fit in SUMMARY_CHARS, the HEADLINE ones first."""
    text = ""
    names = [*(n for n in HEADLINE if n in metrics), *(n for n in metrics if n not in HEADLINE)]
    for name in names:
        if name in NOT_RESULTS:
            continue
        item = pair(name, metrics[name])
        if text and len(text) + 1 + len(item) > SUMMARY_CHARS:
            break
        text = f"{text} {item}".strip()
    return text


def stage_metrics(facts: StageFacts, running: bool) -> dict[str, Any]:
    """The latest part's metrics, with those it declares summed added up across the stage's parts.

    Counts add up over every part. Rates add up over the parts still working while the stage runs,
    as a finished part's last rate is no longer being produced, and over every part once none runs.
    Anything else (a loss, an accuracy, a rate already global) is the latest part's own figure.
    """
    latest = max(facts.progress.values(), key=lambda r: r.get("updated_at", 0))
    metrics = dict(latest.get("metrics") or {})
    summed = latest.get("summed") or {}  # absent in records written before parts declared it
    every_part = list(facts.progress.values())
    working = [r for i, r in facts.progress.items() if i not in facts.parts_done] if running else every_part
    for names, records in ((summed.get("counts", []), every_part), (summed.get("rates", []), working)):
        for name in names:
            if name in metrics:
                metrics[name] = sum((r.get("metrics") or {}).get(name, 0) for r in records)
    return metrics


def pair(name: str, value: Any) -> str:
    return f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"


def metric_text(facts: StageFacts, parts: int, running: bool) -> str:
    """A stage's first four metrics, and while it runs how many of its parts they come from."""
    if not facts.progress:
        return ""
    text = " ".join(pair(k, v) for k, v in list(stage_metrics(facts, running).items())[:4])
    if running and len(facts.progress) < parts:
        reporting = f"{len(facts.progress)} of {parts} parts reporting"
        return f"{text} ({reporting})" if text else reporting
    return text


def _timestamp(facts: StageFacts) -> float | None:
    for record, key in ((facts.success, "completed_at"), (facts.failed, "failed_at"), (facts.running, "started_at")):
        if record and isinstance(record.get(key), (int, float)):
            return record[key]
    updates = [r.get("updated_at", 0) for r in facts.progress.values()]
    return max(updates) if updates else None


def rows(
    name: str, statuses: list[plan.StageStatus], facts: dict[str, StageFacts], now: float | None = None
) -> list[StageRow]:
    now = time.time() if now is None else now
    result = []
    for status in statuses:
        fact = facts.get(status.stage.name, StageFacts())
        stamp = _timestamp(fact)
        running = status.state == "running"
        metrics = stage_metrics(fact, running) if fact.progress else {}
        alert = collapse.alarm(metrics)
        waiting = status.detail if status.state != "complete" else ""
        result.append(
            StageRow(
                experiment=name,
                stage=status.stage.name,
                state=status.state,
                progress=progress_text(status, fact),
                metric=metric_text(fact, status.stage.parts, running),
                age=_age(now - stamp) if stamp else "",
                detail=status.detail,
                **eta_fields(status.stage, fact, now, running),
                alert=alert,
                brief=progress_brief(status, fact),
                summary=alert or waiting or summary_text(metrics),
                metrics=metrics,
            )
        )
    return result


@dataclass(frozen=True)
class ClusterRow:
    experiment: str
    stage: str
    state: State
    pods: str
    restarts: int
    progress: str
    metric: str
    reason: str
    eta: str = ""
    eta_s: float | None = None
    alert: str = ""

    @staticmethod
    def headers(wide: bool, several: bool) -> tuple[str, ...]:
        return "EXPERIMENT", "STAGE", "STATE", "PODS", "RESTARTS", "PROGRESS", "ETA", "METRIC", "REASON"

    def cells(self, wide: bool, several: bool) -> tuple[str, ...]:
        return (
            self.experiment,
            self.stage,
            self.state,
            self.pods,
            str(self.restarts),
            self.progress,
            self.eta,
            " ".join(filter(None, (self.alert, self.metric))),
            self.reason,
        )

    def markup(self, cells: tuple[str, ...], wide: bool, several: bool) -> list[Text]:
        shown = [cell(text) for text in cells]
        shown[2] = Text.from_markup(styled(self.state))
        return shown


Row = StageRow | ClusterRow


def cluster_rows(
    name: str,
    job_facts: dict,
    statuses: list[plan.StageStatus] | None,
    facts: dict[str, StageFacts] | None,
    now: float | None = None,
) -> list[ClusterRow]:
    """One row per stage (and the driver): the Job's word, unless storage already holds the stage complete."""
    now = time.time() if now is None else now
    by_stage = {s.stage.name: s for s in statuses or []}
    result = []
    for stage, job in job_facts.items():
        status, fact = by_stage.get(stage), (facts or {}).get(stage, StageFacts())
        state = "complete" if status is not None and status.state == "complete" else job.state
        # Its Job stays suspended while another experiment's claim holds the dataset (secoctl.claim).
        waits = status is not None and status.state == "waiting" and status.detail.startswith("waits for dataset")
        if waits and state not in ("running", "complete", "failed"):
            state = "waiting"
        running = state == "running"
        result.append(
            ClusterRow(
                experiment=name,
                stage=stage,
                state=state,
                pods=job.pods_text if job.state != "waiting" else "",
                restarts=job.restarts,
                progress=progress_text(status, fact) if status else "",
                metric=metric_text(fact, status.stage.parts, running) if status else "",
                reason=status.detail if waits and state == "waiting" else "; ".join(job.reasons),
                **(eta_fields(status.stage, fact, now, running) if status else {}),
                alert=collapse.alarm(stage_metrics(fact, running)) if fact.progress else "",
            )
        )
    return result
