"""The command set on this machine: stage processes for `apply`, and every other command read from the
storage tree the processes write."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from secoctl import partlog, store
from secoctl.errors import MAX_MESSAGE_CHARS, Failed, SpecError, UserError, shorten, shown
from secoctl.tree import experiment_names, experiment_uri

if TYPE_CHECKING:
    from rich.table import Table

    from secoctl.spec import Experiment
    from secoctl.status import StageRow

FOLLOW_POLL_S = 1.0
PURGE_WAIT_S = 600.0  # a pretrain's checkpoint on stop, at most


def exited(pid: int) -> bool:
    """Gone, or a zombie its parent has yet to reap: either way it writes nothing more."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class LocalBackend:
    def __init__(self, storage: str | None):
        self.option = storage

    def apply(self, experiments: Sequence[Experiment]) -> None:
        from secoctl.backends.local.executor import LocalExecutor, StageFailed
        from secoctl.console import RichObserver

        with RichObserver() as observer:
            try:
                for experiment in experiments:
                    storage = experiment.spec.storage
                    observer.experiment(experiment.name, experiment_uri(storage, experiment.name))
                    with store.reported(storage):  # the executor's own reads and writes of the tree
                        LocalExecutor(storage, observer=observer).apply(experiment)
            except StageFailed as failure:
                observer.stop()
                if (
                    failure.message
                ):  # a failure the part named: its cause and the field to fix; the traceback in its log
                    raise Failed([failure.message], exit_code=1) from None
                raise Failed(
                    [
                        f"stage {failure.stage} failed: part {failure.index} exited with code {failure.exit_code}",
                        f"last lines of {failure.log_location}:",
                        failure.log_tail,
                    ],
                    exit_code=1,
                ) from None
            except KeyboardInterrupt:
                observer.stop()
                raise Failed(
                    ["interrupted; committed work is kept and `secoctl apply` resumes from it"], exit_code=130
                ) from None

    @property
    def root(self) -> str:
        return store.storage(self.option)

    def rows(self, name: str | None) -> list[StageRow]:
        """The stored experiments' rows. A stored spec that cannot be read is that experiment's one "unreadable"
        row, not every experiment's failure; only when nothing else can be shown is it the command's error."""
        root = self.root
        with store.reported(root):
            found = self._names(root, name)
        if not found:
            return []
        from secoctl import plan
        from secoctl.backends.local.executor import alive_anywhere
        from secoctl.status import StageRow, rows
        from secoctl.stored import read_experiment_facts, stored_experiment

        table, unreadable = [], []
        with store.reported(root):
            for experiment_name in found:
                location = experiment_uri(root, experiment_name)
                try:  # a stored spec or a stage's file that is not what secoctl writes
                    experiment = stored_experiment(location)
                    if experiment is None:
                        continue
                    facts = read_experiment_facts(root, experiment, experiment_name)
                    statuses = plan.assess(
                        experiment, facts, alive=alive_anywhere(facts, experiment_name), single_machine=True
                    )
                    table.extend(rows(experiment_name, statuses, facts))
                except (SpecError, UserError) as error:
                    unreadable.append((experiment_name, error))
        if unreadable and not table:
            raise unreadable[0][1]
        lines = [
            (experiment_name, shorten((str(error).splitlines() or [""])[0], MAX_MESSAGE_CHARS))
            for experiment_name, error in unreadable
        ]
        return table + [
            StageRow(experiment_name, "-", "unreadable", "", "", "", line, summary=line)
            for experiment_name, line in lines
        ]

    @staticmethod
    def _names(root: str, name: str | None) -> list[str]:
        """Every stored experiment, `name`, or the experiments of the study `name`."""
        if name is not None and name not in experiment_names(root):
            from secoctl.stored import study_experiments

            return study_experiments(root, name) or experiment_names(root, name)
        return experiment_names(root, name)

    def table(self, rows: list[StageRow]) -> Table:
        from secoctl.console import status_table

        return status_table(rows)

    def print_rows(self, rows: list[StageRow], wide: bool) -> None:
        if not rows:
            from secoctl.text import safe

            print(f"no experiments in {safe(self.root)}")
            return
        from secoctl.console import print_table

        print_table(rows, wide=wide, fit=not wide)

    def finished(self, rows: list[StageRow]) -> bool:
        return not any(row.state == "running" for row in rows)

    def logs(self, name: str, stage: str | None, index: int | None, follow: bool) -> Iterator[str]:
        from secoctl import plan
        from secoctl.backends.local.executor import alive_local_pids
        from secoctl.stored import named, read_experiment_facts, stage_tree

        root = self.root
        location, experiment = named(root, name)
        trees = {s.name: stage_tree(root, name, s) for s in plan.stages(experiment, single_machine=True)}
        if stage is not None and stage not in trees:
            raise UserError(f"--stage: {shown(stage)} is not a stage of {name}; choose one of {', '.join(trees)}")
        with_logs = [s for s, tree in trees.items() if store.list_names(tree.logs)]
        chosen = stage or (with_logs[-1] if with_logs else None)
        if chosen is None:
            raise UserError(f"{name} has no logs yet; `secoctl apply` writes them as stages run")
        stage_uri = trees[chosen].uri
        parts = [i for i in partlog.indexes(stage_uri) if index is None or i == index]
        offsets = dict.fromkeys(parts, 0)
        while True:
            for part in parts:
                text = partlog.read(stage_uri, part)
                yield from partlog.prefixed(chosen, part, text[offsets[part] :], several=len(parts) > 1)
                offsets[part] = len(text)
            if not follow or not alive_local_pids(read_experiment_facts(root, experiment), name):
                return
            time.sleep(FOLLOW_POLL_S)

    def delete(self, name: str, purge: bool) -> Iterator[str]:
        """One experiment, or every experiment of the study `name`."""
        root = self.root
        with store.reported(root):
            names = self._names(root, name)
        for each in names:
            yield from self._delete(root, each, purge)

    def _delete(self, root: str, name: str, purge: bool) -> Iterator[str]:
        from secoctl import datasets
        from secoctl.backends.local.executor import alive_local_pids
        from secoctl.stored import named, read_experiment_facts

        with store.reported(root):
            location, experiment = named(root, name)
            facts = read_experiment_facts(root, experiment) if experiment is not None else {}
            running = alive_local_pids(facts, name)
        for pid in running:
            os.kill(pid, signal.SIGTERM)  # the executor stops its parts as on Ctrl-C (process.terminate_as_interrupt)
            yield f"stopped the local run of {name} (process {pid})"
        if purge and running:  # a stopping pretrain still writes its checkpoint: remove the tree after, not before
            yield f"waiting for process {', '.join(map(str, sorted(running)))} to stop before removing its data"
            deadline = time.monotonic() + PURGE_WAIT_S
            while not all(map(exited, running)):
                if time.monotonic() > deadline:
                    raise UserError(
                        f"the local run of {name} is still stopping after {PURGE_WAIT_S:.0f} s; "
                        f"run `secoctl delete {name} --purge` again once it has"
                    )
                time.sleep(FOLLOW_POLL_S / 4)
        if purge:
            from secoctl.backends.local.executor import sweep_leftovers

            sweep_leftovers(name)
            with store.reported(root):
                store.remove(location)
                yield f"removed {location}"
                if experiment is not None:
                    yield from datasets.purge(root, experiment)
        else:
            yield f"{name}: its data stays in {location} (add --purge to remove it)"
