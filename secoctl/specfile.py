"""Reading spec files: every document of every file is validated before anything runs."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from secoctl.errors import SpecError, SpecProblem
from secoctl.spec import Experiment, parse_experiment
from secoctl.yaml_documents import read_documents


def load_documents(text: str, source: str) -> list[Experiment]:
    """Every experiment in one YAML text, or one SpecError listing every problem; both planes read specs so."""
    try:
        documents = [d for d in read_documents(text) if d.data is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError([SpecProblem(source=source, path="", message=f"invalid YAML: {where}{problem}")]) from None
    if not documents:
        raise SpecError([SpecProblem(source=source, path="", message="no Experiment document in the file")])
    experiments: list[Experiment] = []
    problems: list[SpecProblem] = []
    for position, document in enumerate(documents):
        label = source if len(documents) == 1 else f"{source}[document {position + 1}]"
        problems.extend(SpecProblem(label, d.path, d.message) for d in document.duplicate_keys)
        try:
            experiments.append(parse_experiment(document.data, label))
        except SpecError as error:
            problems.extend(error.problems)
    if problems:
        raise SpecError(problems)
    return experiments


def load_files(paths: list[Path]) -> list[Experiment]:
    """All experiments in the files, or one SpecError listing every problem in all of them."""
    experiments: list[Experiment] = []
    problems: list[SpecProblem] = []
    for path in paths:
        try:
            text = path.read_text() if str(path) != "-" else sys.stdin.read()
        except OSError as error:
            problems.append(SpecProblem(source=str(path), path="", message=f"cannot read: {error.strerror}"))
            continue
        try:
            experiments.extend(load_documents(text, str(path)))
        except SpecError as error:
            problems.extend(error.problems)
    seen: set[str] = set()
    for experiment in experiments:
        if experiment.name in seen:
            problems.append(
                SpecProblem(source=experiment.name, path="metadata.name", message="two experiments share this name")
            )
        seen.add(experiment.name)
    if problems:
        raise SpecError(problems)
    return experiments
