"""The contract every stage part keeps, in a pod or a local process.

A part is one completion index of a stage. It skips itself when its marker exists, reports
progress as JSON lines on stdout and in its progress file, and commits by writing its marker
last, so a killed part leaves nothing that looks finished. A predictable failure (jobs.common.failures)
ends the part with its traceback, then its one failure line, and exit code PREDICTABLE_EXIT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.common import tracking
from jobs.common.failures import PartFailure, Where, classify
from secoctl import partlog, store
from secoctl.plan import stage as stage_of
from secoctl.process import sole
from secoctl.spec import Experiment
from secoctl.spec.file import read_experiment
from secoctl.stored import named_stage_tree
from secoctl.tree import StageTree

PROGRESS_INTERVAL_S = 2.0
RATE_REPORTS = 6  # the recent rate (and so `status`'s ETA) spans the last this many reports


@dataclass
class Part:
    experiment: Experiment
    stage: str
    index: int
    parts: int
    tree: StageTree
    _last_report: float = field(default=0.0, repr=False)
    _recent: deque = field(default_factory=lambda: deque(maxlen=RATE_REPORTS), repr=False)

    def stage_tree(self, stage: str) -> StageTree:
        """A stage's tree as secoctl.stored.stage_tree places it: a shared dataset's, or this experiment's own."""
        return self.tree if stage == self.stage else named_stage_tree(self.experiment, stage)

    def input_index(self, stage: str) -> dict[str, Any]:
        """An earlier stage's committed index: what this part reads, or a failure saying it is not there."""
        uri = self.stage_tree(stage).index
        if not store.exists(uri):
            raise PartFailure(
                f"no {stage} output to read: {uri} is missing; run the {stage} stage first "
                "(`secoctl apply` runs the stages in order), or point spec.storage at the tree that "
                f"holds it",
                "spec.storage",
            )
        return store.read_json(uri)

    @property
    def is_leader(self) -> bool:
        """Only one process per part writes its files (torchrun starts several per node)."""
        return os.environ.get("LOCAL_RANK", "0") == "0"

    def progress(
        self,
        done: float,
        total: float,
        unit: str,
        force: bool = False,
        counts: tuple[str, ...] = (),
        rates: tuple[str, ...] = (),
        **metrics: Any,
    ) -> None:
        """Reports this part's metrics; `counts` and `rates` name those that add up across the stage's parts.

        The part declares it because only it knows: a count of this part's locations sums, a loss or a
        throughput every node already reports for all of them does not. `status` sums counts over every
        part and rates over the parts still working. `per_s`, the units done per second over the last
        reports of this process, is what `status` reckons the ETA with; absent until there are two.
        """
        now = time.monotonic()
        if not force and now - self._last_report < PROGRESS_INTERVAL_S:
            return
        self._last_report = now
        self._recent.append((now, done))
        record = {
            "stage": self.stage,
            "index": self.index,
            "done": done,
            "total": total,
            "unit": unit,
            "metrics": metrics,
            "summed": {"counts": list(counts), "rates": list(rates)},
            "updated_at": time.time(),
        }
        (first_at, first_done), (last_at, last_done) = self._recent[0], self._recent[-1]
        if last_at > first_at and last_done > first_done:
            record["per_s"] = round((last_done - first_done) / (last_at - first_at), 6)
        print(json.dumps({"event": "progress", **record}), flush=True)
        if self.is_leader:
            store.write_json(self.tree.progress(self.index), record)


def run(stage: str, work: Callable[[Part], dict[str, Any]], argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m jobs.{stage}")
    parser.add_argument("--spec", required=True, help="spec.yaml path or URI")
    args = parser.parse_args(argv)
    store.use_timeouts(store.DATA_PLANE)
    index = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    where = Where(stage, index, args.spec)
    experiment = None
    try:
        experiment = read_experiment(args.spec)
        where = Where(stage, index, store.storage(own=experiment.spec.storage), experiment.spec.collect.stac_url)
        _run_part(stage, work, experiment, index)
    except Exception as error:
        tracking.failed(experiment)
        failure = classify(error, where)
        if failure is None:
            raise  # a bug: its traceback is the report
        traceback.print_exc()  # the whole story stays in the part's log
        print(partlog.failure_line(stage, index, failure.cause, failure.field), flush=True)
        sys.exit(partlog.PREDICTABLE_EXIT)


def _run_part(stage: str, work: Callable[[Part], dict[str, Any]], experiment: Experiment, index: int) -> None:
    parts = int(os.environ.get("SECOCTL_PARTS") or stage_of(experiment, stage).parts)
    part = Part(experiment, stage, index, parts, named_stage_tree(experiment, stage))
    if store.exists(part.tree.part_done(index)):
        print(json.dumps({"event": "skipped", "stage": stage, "index": index, "reason": "part already committed"}))
        return
    started = time.time()
    with (
        sole(
            part.tree.path("parts", str(index)),
            f"part {index} of stage {stage} of {experiment.name} is already "
            f"running in another process on this machine; `secoctl delete {experiment.name}` stops it",
        )
        if part.is_leader
        else contextlib.nullcontext()
    ):
        summary = work(part)
    if part.is_leader:
        store.write_json(
            part.tree.part_done(index),
            {"index": index, "started_at": started, "finished_at": time.time(), "summary": summary},
        )
    print(json.dumps({"event": "committed", "stage": stage, "index": index}), flush=True)
