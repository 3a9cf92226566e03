"""What a person sees: a progress bar per stage while `apply` runs, a table for `status`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from secoctl import plan
from secoctl.backends.local.executor import Observer
from secoctl.status import Row, StageRow, metric_text, stage_progress
from secoctl.text import cell, markup_safe, one_line
from secoctl.tree import StageFacts


class RichObserver(Observer):
    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
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
        self.say(f"[bold]{markup_safe(name)}[/bold] -> {markup_safe(uri)}")

    def stage_skipped(self, stage: plan.Stage) -> None:
        self.say(f"  {stage.name}: complete, skipped")

    def stage_started(self, stage: plan.Stage, parts_done: int) -> None:
        resumed = f" (resuming: {parts_done}/{stage.parts} parts done)" if parts_done else ""
        self.say(f"  {stage.name}: running {stage.parts} part(s){resumed}")
        self.tasks[stage.name] = self.progress.add_task(stage.name, total=None, detail="starting")

    def stage_progress(self, stage: plan.Stage, facts: StageFacts) -> None:
        progress = stage_progress(stage, facts)
        if progress is None:
            return
        metrics = metric_text(facts, stage.parts, running=True)
        detail = markup_safe(one_line(f"{progress.done:g}/{progress.total:g} {progress.unit} {metrics}"))
        self.progress.update(
            self.tasks[stage.name], completed=progress.done, total=progress.total or None, detail=detail
        )
        if self.progress.disable and self.printed.get(stage.name) != detail:
            self.printed[stage.name] = detail
            self.say(f"  {stage.name}: {detail}", highlight=False)

    def dataset_wait(self, stage: plan.Stage, claim: dict) -> None:
        # The owner's name comes from the storage tree: printed as plain text, never as markup.
        self.console.print(
            f"  {stage.name}: {plan.waits_for(stage, claim)}", markup=False, highlight=False, soft_wrap=True
        )

    def stage_finished(self, stage: plan.Stage, seconds: float) -> None:
        task = self.tasks.get(stage.name)
        if task is not None:
            total = self.progress.tasks[task].total or 1
            self.progress.update(task, completed=total, total=total)
        self.say(f"  {stage.name}: complete in {seconds:.1f}s")

    def say(self, line: str, highlight: bool | None = None) -> None:
        """One line of rich markup. Without a terminal (a log file, CI) it is printed whole, never wrapped at
        the console's guessed 80 columns: a reader or a grep needs the line as it was."""
        self.console.print(line, highlight=highlight, soft_wrap=not self.console.is_terminal)


def width_unknown() -> bool:
    """Whether the width rich would use is its guess of 80 columns: no terminal and no COLUMNS."""
    return not Console().is_terminal and "COLUMNS" not in os.environ


def print_table(
    rows: Sequence[Row],
    row_type: type[Row] = StageRow,
    wide: bool = False,
    fit: bool = True,
    title: str | None = None,
    width: int | None = None,
) -> None:
    """`fit`: cut to the terminal's width, only the last column cut (as kubectl's table); otherwise at its
    natural width (or `width`), long lines left to the terminal, as `kubectl get -o wide` prints them.

    Without a terminal and without COLUMNS the width is a guess (80), so the table is printed whole: a
    log or a pipe keeps every line's end, where the advice is."""
    console = Console(width=width) if width else Console()
    if width_unknown():
        fit, width = False, None
    table = status_table(rows, wide, row_type=row_type, fit=fit, title=title)
    if not fit and not width:
        natural = console.measure(table, options=console.options.update_width(100_000)).maximum
        console = Console(width=max(console.width, natural))
    console.print(table)


def status_table(
    rows: Sequence[Row],
    wide: bool = False,
    row_type: type[Row] = StageRow,
    fit: bool | None = None,
    title: str | None = None,
) -> Table:
    """One line per row. Fitted, every column but the last keeps its width and the last is cut."""
    several = len({row.experiment for row in rows}) > 1
    headers = row_type.headers(wide, several)
    lines = [tuple(one_line(text) for text in row.cells(wide, several)) for row in rows]
    if fit is None:
        fit = not wide
    if fit:
        table = Table(box=None, title=None if title is None else cell(title))
        for number, header in enumerate(headers[:-1]):
            table.add_column(header, no_wrap=True, min_width=max(len(header), *(len(line[number]) for line in lines)))
        table.add_column(headers[-1], no_wrap=True, overflow="ellipsis")
    else:
        table = Table(*headers, box=None, title=None if title is None else cell(title))
    for row, line in zip(rows, lines):
        table.add_row(*row.markup(line, wide, several))
    return table


def watch(
    read: Callable[[], list[Row]],
    finished: Callable[[list[Row]], bool],
    draw: Callable[[list[Row]], Table],
    rows: list[Row],
    every_s: float = 2.0,
) -> None:
    """Redraw the table from `read` until `finished` says nothing runs."""
    with Live(draw(rows), refresh_per_second=1) as live:
        while not finished(rows):
            time.sleep(every_s)
            rows = read()
            live.update(draw(rows))
