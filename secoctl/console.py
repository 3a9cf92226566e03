"""What a person sees: a progress bar per stage while `apply` runs, a table for `status`."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from secoctl import plan
from secoctl.backends.local.executor import Observer
from secoctl.states import styled
from secoctl.status import StageRow, metric_text, pair, stage_progress
from secoctl.tree import StageFacts


class RichObserver(Observer):
    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(), console=self.console, transient=False,
            disable=not sys.stderr.isatty(),
        )
        self.tasks: dict[str, TaskID] = {}
        self.printed: dict[str, str] = {}

    def __enter__(self) -> "RichObserver":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.progress.stop()

    def experiment(self, name: str, uri: str) -> None:
        self.console.print(f"[bold]{name}[/bold] -> {uri}")

    def stage_skipped(self, stage: plan.Stage) -> None:
        self.console.print(f"  {stage.name}: complete, skipped")

    def stage_started(self, stage: plan.Stage, parts_done: int) -> None:
        resumed = f" (resuming: {parts_done}/{stage.parts} parts done)" if parts_done else ""
        self.console.print(f"  {stage.name}: running {stage.parts} part(s){resumed}")
        self.tasks[stage.name] = self.progress.add_task(stage.name, total=None, detail="starting")

    def stage_progress(self, stage: plan.Stage, facts: StageFacts) -> None:
        progress = stage_progress(stage, facts)
        if progress is None:
            return
        metrics = metric_text(facts, stage.parts, running=True)
        detail = f"{progress.done:g}/{progress.total:g} {progress.unit} {metrics}"
        self.progress.update(self.tasks[stage.name], completed=progress.done, total=progress.total or None,
                             detail=detail)
        if self.progress.disable and self.printed.get(stage.name) != detail:
            self.printed[stage.name] = detail
            self.console.print(f"  {stage.name}: {detail}", highlight=False)

    def stage_finished(self, stage: plan.Stage, seconds: float) -> None:
        task = self.tasks.get(stage.name)
        if task is not None:
            total = self.progress.tasks[task].total or 1
            self.progress.update(task, completed=total, total=total)
        self.console.print(f"  {stage.name}: complete in {seconds:.1f}s")


def print_status(rows: list[StageRow], wide: bool = False) -> None:
    """The table cut to the terminal's width; `wide` at its natural width, long lines left to the
    terminal, as `kubectl get -o wide` prints them."""
    console = Console()
    table = status_table(rows, wide)
    if wide:
        natural = console.measure(table, options=console.options.update_width(100_000)).maximum
        console = Console(width=max(console.width, natural))
    console.print(table)


def status_table(rows: list[StageRow], wide: bool = False) -> Table:
    """One line per stage, only its SUMMARY cut to fit (as kubectl's table); `wide` carries every
    figure, metric and reason. The EXPERIMENT column only when there is more than one."""
    several = len({row.experiment for row in rows}) > 1
    if wide:
        table = Table("EXPERIMENT", "STAGE", "STATE", "PROGRESS", "ETA", "AGE", "METRIC", "DETAIL", box=None)
        for row in rows:
            table.add_row(row.experiment, row.stage, styled(row.state), row.progress, row.eta, row.age,
                          " ".join([row.alert, *(pair(k, v) for k, v in row.metrics.items())]).strip(), row.detail)
        return table
    headers = ("EXPERIMENT",) * several + ("STAGE", "STATE", "PROGRESS", "ETA", "AGE", "SUMMARY")
    lines = [(row.experiment,) * several + (row.stage, row.state, row.brief, row.eta, row.age, row.summary)
             for row in rows]
    table = Table(box=None)
    for number, header in enumerate(headers[:-1]):  # these keep their width: only SUMMARY is cut
        table.add_column(header, no_wrap=True, min_width=max(len(header), *(len(line[number]) for line in lines)))
    table.add_column(headers[-1], no_wrap=True, overflow="ellipsis")
    state, summary = headers.index("STATE"), headers.index("SUMMARY")
    for row, line in zip(rows, lines):
        cells = list(line)
        cells[state] = styled(row.state)
        cells[summary] = f"[red]{row.summary}[/red]" if row.alert else row.summary
        table.add_row(*cells)
    return table
