"""Where each stage keeps its markers, parts and progress in the storage tree (its logs: `partlog`).

Both planes use these names: a job writes them, the executors and `status` read them.
One progress file per part, not one per stage, because object stores have no safe
concurrent update of a shared object.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from secoctl import store

SPEC_FILE = "spec.yaml"
SUCCESS = "_SUCCESS"
FAILED = "_FAILED"
RUNNING = "_RUNNING"
INDEX = "index.json"


@dataclass(frozen=True)
class StageTree:
    experiment_uri: str
    stage: str

    @property
    def uri(self) -> str:
        return store.join(self.experiment_uri, self.stage)

    def path(self, *parts: str) -> str:
        return store.join(self.uri, *parts)

    @property
    def success(self) -> str:
        return self.path(SUCCESS)

    @property
    def failed(self) -> str:
        return self.path(FAILED)

    @property
    def running(self) -> str:
        return self.path(RUNNING)

    @property
    def index(self) -> str:
        return self.path(INDEX)

    def part_done(self, index: int) -> str:
        return self.path("parts", f"{index:05d}.json")

    def progress(self, index: int) -> str:
        return self.path("progress", f"{index:05d}.json")


@dataclass
class StageFacts:
    """What the storage tree says about one stage, read in one pass."""

    success: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None
    running: dict[str, Any] | None = None
    parts_done: set[int] = field(default_factory=set)
    progress: dict[int, dict[str, Any]] = field(default_factory=dict)

    def missing_parts(self, parts: int) -> list[int]:
        """The parts of a stage of `parts` that have not committed."""
        return sorted(set(range(parts)) - self.parts_done)


def spec_uri(experiment_uri: str) -> str:
    return store.join(experiment_uri, SPEC_FILE)


def read_facts(tree: StageTree) -> StageFacts:
    names = set(store.list_names(tree.uri))
    facts = StageFacts()
    if SUCCESS in names:
        facts.success = store.read_json_or_none(tree.success) or {}
    if FAILED in names:
        facts.failed = store.read_json_or_none(tree.failed) or {}
    if RUNNING in names:
        facts.running = store.read_json_or_none(tree.running) or {}
    if "parts" in names:
        facts.parts_done = {int(n.split(".")[0]) for n in store.list_names(tree.path("parts")) if n.endswith(".json")}
    if "progress" in names:
        for name in store.list_names(tree.path("progress")):
            if name.endswith(".json") and not name.startswith("."):
                value = store.read_json_or_none(tree.path("progress", name))
                if value is not None:
                    facts.progress[int(name.split(".")[0])] = value
    return facts


def commit_stage(tree: StageTree, fingerprint: str, parts: int) -> list[int]:
    """The stage-level commit: `index.json` of the parts' summaries, then `_SUCCESS`; returns missing parts.

    The local executor refuses to commit with parts missing; the cluster driver commits when the Job
    completed (the Job is the authority there) and records which parts left no summary.
    """
    missing = read_facts(tree).missing_parts(parts)
    summaries = [store.read_json(tree.part_done(i)) for i in range(parts) if i not in missing]
    store.write_json(tree.index, {"stage": tree.stage, "parts": summaries, "missing_parts": missing})
    store.write_json(tree.success, {"fingerprint": fingerprint, "completed_at": time.time(), "parts": parts})
    return missing
