"""Reading spec files: every document of every file is validated before anything runs."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from secoctl.errors import SpecError, SpecProblem
from secoctl.spec import Experiment, parse_experiment, study
from secoctl.spec.yaml_documents import LimitExceeded, read_documents

# The spec travels to the cluster in a ConfigMap, whose data Kubernetes caps at 1 MiB: a larger spec
# could never run there. Real specs are a few KB.
MAX_SPEC_BYTES = 2**20


def read_spec(location: str) -> bytes:
    """A spec file, stdin ('-') or a storage URI, read no further than one byte past MAX_SPEC_BYTES."""
    if location == "-":
        return sys.stdin.buffer.read(MAX_SPEC_BYTES + 1)
    if "://" in location:
        from secoctl import store

        fs, path = store.filesystem(location)
        with fs.open(path, "rb") as handle:
            return handle.read(MAX_SPEC_BYTES + 1)
    with open(location, "rb") as handle:
        return handle.read(MAX_SPEC_BYTES + 1)


def _text(content: str | bytes, source: str) -> str:
    size = len(content) if isinstance(content, bytes) else len(content.encode(errors="surrogatepass"))
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            [
                SpecProblem(
                    source,
                    "",
                    f"larger than {MAX_SPEC_BYTES // 2**20} MiB, the most a "
                    "Kubernetes ConfigMap holds; a spec is a few KB",
                )
            ]
        )
    if isinstance(content, str):
        return content
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content[: error.start].count(b"\n") + 1
        raise SpecError(
            [
                SpecProblem(
                    source,
                    "",
                    f"not UTF-8 text: byte {content[error.start]:#04x} on line {line}; save the file as UTF-8",
                )
            ]
        ) from None


def load_documents(content: str | bytes, source: str) -> list[Experiment]:
    """Every experiment in one YAML text, a Study's expanded into its variants' (secoctl.spec.study), or one
    SpecError listing every problem; both planes read specs so.

    Bytes are read as UTF-8; text or bytes beyond MAX_SPEC_BYTES are refused unread.
    """
    text = _text(content, source)
    try:
        documents = [d for d in read_documents(text) if d.data is not None]
    except LimitExceeded as error:
        raise SpecError([SpecProblem(source, error.path, f"line {error.line}: {error.message}")]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError([SpecProblem(source=source, path="", message=f"invalid YAML: {where}{problem}")]) from None
    if not documents:
        raise SpecError([SpecProblem(source=source, path="", message="no Experiment or Study document in the file")])
    experiments: list[Experiment] = []
    problems: list[SpecProblem] = []
    for position, document in enumerate(documents):
        label = source if len(documents) == 1 else f"{source}[document {position + 1}]"
        problems.extend(SpecProblem(label, d.path, d.message) for d in document.duplicate_keys)
        try:
            if isinstance(document.data, dict) and document.data.get("kind") == study.KIND:
                experiments.extend(study.parse_study(document.data, label))
            else:
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
            content = read_spec(str(path))
        except OSError as error:
            problems.append(SpecProblem(source=str(path), path="", message=f"cannot read: {error.strerror}"))
            continue
        try:
            experiments.extend(load_documents(content, str(path)))
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


def read_experiment(location: str) -> Experiment:
    """The one experiment a stored spec holds: a path or a URI, as the driver, each part and `status` read it."""
    return load_documents(read_spec(location), location)[0]


def spec_document(experiment: Experiment) -> str:
    """The spec as it is stored beside its experiment's tree and in its ConfigMap."""
    return yaml.safe_dump(experiment.to_yaml_dict(), sort_keys=False)
