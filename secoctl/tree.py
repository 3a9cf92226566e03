"""Where each stage keeps its markers, parts and progress in the storage tree (its logs: `partlog`).

Both planes use these names: a job writes them, the executors and `status` read them.
One progress file per part, not one per stage, because object stores have no safe
concurrent update of a shared object.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from secoctl import store
from secoctl.errors import UserError, listing, shown

EXPERIMENTS = "experiments"
DATASETS = "datasets"
CLAIM = "_CLAIM"
SPEC_FILE = "spec.yaml"
SUCCESS = "_SUCCESS"
FAILED = "_FAILED"
RUNNING = "_RUNNING"
INDEX = "index.json"
LOGS = "logs"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"


def experiments_uri(storage: str) -> str:
    return store.join(storage, EXPERIMENTS)


def experiment_uri(storage: str, name: str) -> str:
    """The one place an experiment's own tree is: `<storage>/experiments/<name>`."""
    return store.join(experiments_uri(storage), name)


def storage_holding(experiment_uri: str) -> str:
    """The storage an experiment's tree `<storage>/experiments/<name>` is in."""
    parent, _, _ = experiment_uri.rstrip("/").rpartition("/")
    storage, _, folder = parent.rpartition("/")
    if folder != EXPERIMENTS:
        raise ValueError(f"{experiment_uri} is not an experiment's tree (<storage>/{EXPERIMENTS}/<name>)")
    return storage


def datasets_uri(storage: str) -> str:
    return store.join(storage, DATASETS)


def dataset_uri(storage: str, dataset: str) -> str:
    """A shared stage's output, named `<stage>-<fingerprint>`: `<storage>/datasets/<dataset>`."""
    return store.join(datasets_uri(storage), dataset)


def experiment_names(storage: str, name: str | None = None) -> list[str]:
    """The stored experiments' names (or just `name`, refused when absent); storage failures are left to
    the caller's `store.reported`."""
    found = store.list_names(experiments_uri(storage))
    # The embedded default is absent until a first apply; a storage someone named is a mistake.
    if not found and storage != store.home_storage() and store.is_missing(storage):
        raise UserError(f"storage {storage} does not exist; check --storage or ${store.ENV_STORAGE}")
    if name is None:
        return found
    if name not in found:
        raise UserError(f"no experiment {shown(name)} in {storage}; it holds {listing(found)}")
    return [name]


@dataclass(frozen=True)
class StageTree:
    """A stage's folder: `<experiment_uri>/<stage>`, or `at` where the stage's output is a shared dataset."""

    experiment_uri: str
    stage: str
    at: str | None = None

    @property
    def uri(self) -> str:
        return self.at or store.join(self.experiment_uri, self.stage)

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
    def claim(self) -> str:
        return self.path(CLAIM)

    @property
    def index(self) -> str:
        return self.path(INDEX)

    @property
    def logs(self) -> str:
        return self.path(LOGS)

    @property
    def checkpoints(self) -> str:
        return self.path(CHECKPOINTS)

    @property
    def metrics(self) -> str:
        return self.path(METRICS)

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
    claim: dict[str, Any] | None = None  # a shared dataset's owner while one runs it (secoctl.claim)
    parts_done: set[int] = field(default_factory=set)
    progress: dict[int, dict[str, Any]] = field(default_factory=dict)

    def missing_parts(self, parts: int) -> list[int]:
        """The parts of a stage of `parts` that have not committed."""
        return sorted(set(range(parts)) - self.parts_done)

    def complete_for(self, fingerprint: str) -> bool:
        """Complete means: its `_SUCCESS` carries the fingerprint of the spec that asks for it now."""
        return self.success is not None and self.success.get("fingerprint") == fingerprint


def spec_uri(experiment_uri: str) -> str:
    return store.join(experiment_uri, SPEC_FILE)


def read_facts(tree: StageTree) -> StageFacts:
    """The stage's markers, committed parts and progress records; a file that is not what a stage writes
    (a marker that is no JSON object, a part not named by its number, a count that is no number) is a
    UserError naming it, so that `status` shows that experiment as unreadable and every other one."""
    names = set(store.list_names(tree.uri))
    facts = StageFacts()
    if SUCCESS in names:
        facts.success = _record(tree.success)
    if FAILED in names:
        facts.failed = _record(tree.failed)
    if RUNNING in names:
        facts.running = _record(tree.running)
    if CLAIM in names:
        facts.claim = _record(tree.claim)
    if "parts" in names:
        facts.parts_done = {
            _part_number(tree.path("parts", n)) for n in store.list_names(tree.path("parts")) if n.endswith(".json")
        }
    if "progress" in names:
        for name in store.list_names(tree.path("progress")):
            if name.endswith(".json") and not name.startswith("."):
                uri = tree.path("progress", name)
                value = store.read_json_or_none(uri)
                if value is not None:
                    facts.progress[_part_number(uri)] = _progress(uri, value)
    return facts


def _record(uri: str) -> dict[str, Any]:
    value = store.read_json_or_none(uri)
    if value is not None and not isinstance(value, dict):
        raise UserError(f"{uri} holds {type(value).__name__} JSON, not a stage's record (a JSON object)")
    return value or {}


def _part_number(uri: str) -> int:
    stem = uri.rsplit("/", 1)[-1].split(".")[0]
    if not stem.isdigit():
        raise UserError(f"{uri} is not named by a part's number (00000.json)")
    return int(stem)


def _progress(uri: str, value: Any) -> dict[str, Any]:
    numbers = ("done", "total", "updated_at", "per_s")
    if (
        not isinstance(value, dict)
        or any(
            key in value and (not isinstance(value[key], (int, float)) or isinstance(value[key], bool))
            for key in numbers
        )
        or not all(isinstance(value.get(key) or {}, dict) for key in ("metrics", "summed"))
    ):
        raise UserError(f"{uri} is not a progress record (a JSON object whose {', '.join(numbers)} are numbers)")
    return value


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


class StageRun:
    """One run of a stage's marker protocol, the same for the local executor and the cluster's driver:
    `_FAILED` goes and `_RUNNING` is written when it starts, `commit` (index.json, then `_SUCCESS`) or
    `fail` (`_FAILED`) ends it, and `_RUNNING` goes however it ends."""

    def __init__(self, tree: StageTree, running: dict[str, Any]):
        self.tree, self.running = tree, running

    def beat(self) -> None:
        """`_RUNNING` again with `heartbeat_at` now: a reader on another host sees the run is alive."""
        self.running = {**self.running, "heartbeat_at": time.time()}
        store.write_json(self.tree.running, self.running)

    def owns_marker(self) -> bool:
        return store.read_json_or_none(self.tree.running) == json.loads(json.dumps(self.running))

    def commit(self, fingerprint: str, parts: int) -> list[int]:
        return commit_stage(self.tree, fingerprint, parts)

    def fail(self, record: dict[str, Any]) -> None:
        store.write_json(self.tree.failed, {**record, "failed_at": time.time()})


@contextmanager
def stage_run(tree: StageTree, running: dict[str, Any]) -> Iterator[StageRun]:
    store.remove(tree.failed)
    run = StageRun(tree, running)
    store.write_json(tree.running, running)
    try:
        yield run
    finally:
        if run.owns_marker():  # only its owner removes a marker: another run's `_RUNNING`, written since, stays
            store.remove(tree.running)
