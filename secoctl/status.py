"""Rows of `secoctl status`: where each stage stands, read from the storage tree."""

from __future__ import annotations

import time
from dataclasses import dataclass

from secoctl import plan
from secoctl.tree import StageFacts


@dataclass(frozen=True)
class StageRow:
    experiment: str
    stage: str
    state: str
    progress: str
    metric: str
    age: str
    detail: str


def _age(seconds: float) -> str:
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def progress_text(status: plan.StageStatus, facts: StageFacts) -> str:
    records = list(facts.progress.values())
    parts = f"{status.parts_done}/{status.stage.parts} parts"
    if status.state == "complete" or not records:
        return parts
    done = sum(r.get("done", 0) for r in records)
    total = sum(r.get("total", 0) for r in records)
    unit = records[0].get("unit", "")
    percent = f" ({100 * done / total:.0f}%)" if total else ""
    return f"{done:g}/{total:g} {unit}{percent}, {parts}"


def metric_text(facts: StageFacts) -> str:
    if not facts.progress:
        return ""
    latest = max(facts.progress.values(), key=lambda r: r.get("updated_at", 0))
    metrics = latest.get("metrics") or {}
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(metrics.items())[:4])


def _timestamp(facts: StageFacts) -> float | None:
    for record, key in ((facts.success, "completed_at"), (facts.failed, "failed_at"), (facts.running, "started_at")):
        if record and isinstance(record.get(key), (int, float)):
            return record[key]
    updates = [r.get("updated_at", 0) for r in facts.progress.values()]
    return max(updates) if updates else None


def rows(name: str, statuses: list[plan.StageStatus], facts: dict[str, StageFacts],
         now: float | None = None) -> list[StageRow]:
    now = time.time() if now is None else now
    result = []
    for status in statuses:
        fact = facts.get(status.stage.name, StageFacts())
        stamp = _timestamp(fact)
        result.append(StageRow(
            experiment=name, stage=status.stage.name, state=status.state,
            progress=progress_text(status, fact), metric=metric_text(fact),
            age=_age(now - stamp) if stamp else "", detail=status.detail,
        ))
    return result


@dataclass(frozen=True)
class ClusterRow:
    experiment: str
    stage: str
    state: str
    pods: str
    restarts: int
    progress: str
    metric: str
    reason: str


def cluster_rows(name: str, job_facts: dict, statuses: list[plan.StageStatus] | None,
                 facts: dict[str, StageFacts] | None) -> list[ClusterRow]:
    """One row per stage (and the driver): the Job's word, unless storage already holds the stage complete."""
    by_stage = {s.stage.name: s for s in statuses or []}
    result = []
    for stage, job in job_facts.items():
        status, fact = by_stage.get(stage), (facts or {}).get(stage, StageFacts())
        state = "complete" if status is not None and status.state == "complete" else job.state
        result.append(ClusterRow(
            experiment=name, stage=stage, state=state, pods=job.pods_text if job.state != "waiting" else "",
            restarts=job.restarts, progress=progress_text(status, fact) if status else "",
            metric=metric_text(fact), reason="; ".join(job.reasons),
        ))
    return result
