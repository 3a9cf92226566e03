"""The stage graph of an experiment and where each stage stands. Pure: facts in, decisions out.

Both executors use this: the local one to run stages as processes, the in-cluster driver to start
each stage's Job (which `apply` made suspended; the driver creates none) in its turn. The stages
there can be, in order, are the records of `secoctl.stages`; this says which of them a spec asks
for, with how many parts and what fingerprint. A stage is complete when its `_SUCCESS` marker
carries the fingerprint of the spec that produced it; a completed stage is never run again.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from secoctl import stages as records
from secoctl.claim import holder_if_live
from secoctl.spec import Experiment
from secoctl.states import State
from secoctl.tree import StageFacts

RENDEZVOUS_PORT = 29400


@dataclass(frozen=True)
class Stage:
    name: str
    parts: int
    reads: tuple[str, ...]
    fingerprint: str
    distributed: bool = False
    record: records.StageRecord | None = field(default=None, compare=False, repr=False)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def stages(experiment: Experiment, single_machine: bool = False) -> list[Stage]:
    """The stages this spec asks for, in order, each with the fingerprint of all it depends on.

    On a single machine a distributed stage is one part (one torchrun agent), whatever `nodes` says.
    """
    result: list[Stage] = []
    upstream = ""
    for record in records.STAGES:
        parts = record.parts(experiment.spec)
        if not parts:
            continue
        fingerprint = _digest([upstream, record.name, record.inputs(experiment.spec)])
        result.append(
            Stage(
                name=record.name,
                parts=1 if single_machine and record.distributed else parts,
                reads=tuple(s.name for s in result),
                fingerprint=fingerprint,
                distributed=record.distributed,
                record=record,
            )
        )
        upstream = fingerprint
    return result


def dataset_name(stage: Stage) -> str | None:
    """The shared dataset a stage's output is, `<stage>-<fingerprint>`; None for a stage an experiment owns.

    The fingerprint covers the stage's inputs and its upstream's (never the experiment's name, resources,
    credentials or image: `StageRecord.inputs`), so every experiment that asks for the same bytes names one."""
    return f"{stage.name}-{stage.fingerprint}" if stage.record is not None and stage.record.shared else None


def waits_for(stage: Stage, claim: dict[str, Any]) -> str:
    """What a stage waiting on another experiment's claim of its dataset says in `status` and the console."""
    verb = "collected" if stage.name == "collect" else "made"
    return f"waits for dataset {dataset_name(stage)}, {verb} by experiment {claim.get('experiment', '?')}"


def stage(experiment: Experiment, name: str, single_machine: bool = False) -> Stage:
    for candidate in stages(experiment, single_machine):
        if candidate.name == name:
            return candidate
    raise KeyError(f"experiment {experiment.name} has no stage {name!r}")


@dataclass(frozen=True)
class StageStatus:
    stage: Stage
    state: State
    parts_done: int
    detail: str = ""


def assess(
    experiment: Experiment,
    facts: dict[str, StageFacts],
    alive: set[int] | None = None,
    single_machine: bool = False,
    now: float | None = None,
) -> list[StageStatus]:
    """Where every stage stands. `alive` holds the local process ids still running, if known; a shared
    dataset another experiment holds a live claim on (secoctl.claim) is `waiting` for it."""
    now = time.time() if now is None else now
    statuses: list[StageStatus] = []
    blocked = False
    for item in stages(experiment, single_machine):
        fact = facts.get(item.name, StageFacts())
        done = item.parts - len(fact.missing_parts(item.parts))
        if fact.success is not None:
            if fact.complete_for(item.fingerprint):
                statuses.append(StageStatus(item, "complete", item.parts))
                continue
            statuses.append(StageStatus(item, "changed", done, "spec changed after this stage completed"))
            blocked = True
            continue
        if blocked:
            statuses.append(StageStatus(item, "waiting", done, "waits for an earlier stage"))
            continue
        blocked = True
        claim = holder_if_live(fact.claim, now) if dataset_name(item) else None
        if claim is not None and claim.get("experiment") != experiment.name:
            statuses.append(StageStatus(item, "waiting", done, waits_for(item, claim)))
        elif fact.running is not None:
            pid = fact.running.get("pid")
            if alive is None or pid in alive:
                statuses.append(StageStatus(item, "running", done))
            else:
                statuses.append(StageStatus(item, "interrupted", done, "its executor stopped; apply resumes it"))
        elif fact.failed is not None:
            statuses.append(StageStatus(item, "failed", done, fact.failed.get("reason", "")))
        else:
            statuses.append(StageStatus(item, "ready", done))
    return statuses


def changed_stages(previous: Experiment, current: Experiment) -> list[str]:
    """Stages whose inputs differ between two versions of a spec."""
    before = {s.name: s.fingerprint for s in stages(previous)}
    return [s.name for s in stages(current) if before.get(s.name) not in (None, s.fingerprint)]


def stage_argv(
    item: Stage,
    spec_location: str,
    *,
    nproc_per_node: int = 1,
    rendezvous: str | None = None,
    nodes: int = 1,
    run_id: str = "",
) -> list[str]:
    """The command a pod or a local process runs for a stage: the same entry point in both."""
    module = item.record.module
    if not item.distributed:
        return ["python", "-m", module, "--spec", spec_location]
    if rendezvous is None:
        launch = ["--standalone", f"--nnodes={nodes}"]
    else:
        launch = [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rendezvous}", f"--rdzv-id={run_id}"]
    return ["torchrun", *launch, f"--nproc-per-node={nproc_per_node}", "-m", module, "--spec", spec_location]


def local_argv(item: Stage, spec_location: str, nproc_per_node: int) -> list[str]:
    """stage_argv with this interpreter, so a virtual environment need not be activated."""
    argv = stage_argv(item, spec_location, nproc_per_node=nproc_per_node)
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
