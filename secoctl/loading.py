"""Spec files as the commands take them: every experiment validated and refused whole, with its warnings, on
the storage it will use; a failure is its lines on stderr and the exit code, never a traceback."""

from pathlib import Path
from typing import Optional

import typer

from secoctl import store
from secoctl.errors import SpecError


def fail(lines: list[str], code: int = 2) -> None:
    from secoctl.text import safe

    for line in lines:
        typer.echo(safe(line), err=True)
    raise typer.Exit(code)


def load(files: list[Path]):
    """Every experiment in the files, refused whole if one is invalid or renders more than the cluster accepts;
    each one's warnings on stderr (a valid spec that will cost more than it needs to)."""
    from secoctl.backends.kubernetes.executor import oversized
    from secoctl.spec.advice import warnings
    from secoctl.spec.file import load_files

    try:
        experiments = load_files(files)
    except SpecError as error:
        fail([str(p) for p in error.problems])
    problems = [problem for experiment in experiments for problem in oversized(experiment)]
    if problems:
        fail([str(p) for p in problems])
    for experiment in experiments:
        for line in warnings(experiment):
            typer.echo(f"{experiment.name}: warning: {line}", err=True)
    return experiments


def publish_unclaimed(experiments, local_only: bool) -> None:
    """Refused before any stage runs: a spec that would publish over another experiment's weights."""
    from secoctl.spec.advice import publish_clash

    clashes = [line for experiment in experiments for line in publish_clash(experiment, local_only)]
    if clashes:
        fail(clashes)


def on_storage(experiment, storage: Optional[str]):
    """The experiment on the storage `store.resolve` chooses for it, validated as spec.storage is."""
    chosen, source = store.resolve(storage, experiment.spec.storage, experiment.name)
    if chosen == experiment.spec.storage:
        return experiment
    try:
        return experiment.with_storage(chosen, source)
    except SpecError as error:
        fail([str(p) for p in error.problems])
