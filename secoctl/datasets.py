"""The shared datasets a storage holds (`secoctl datasets`) and which stored experiments read each one.

A stored experiment's spec names the datasets it reads: each shared stage's dataset is `<stage>-<fingerprint>`,
and the fingerprint is a function of the stored spec alone (plan.stages), so no second record can disagree with
it. An experiment still reading an old tree in place (secoctl.stored.stage_tree) reads no dataset.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from secoctl import plan, store, stored
from secoctl.errors import SpecError, UserError
from secoctl.spec import Experiment
from secoctl.tree import DATASETS, StageFacts, StageTree, datasets_uri, experiment_uri, read_facts

# A dataset folder's name; anything else under datasets/ (a task's evaluation data put there) is not listed.
NAME = re.compile(r"(?P<stage>[a-z][a-z0-9-]*)-(?P<fingerprint>[0-9a-f]{16})")


@dataclass(frozen=True)
class Dataset:
    name: str
    stage: str
    fingerprint: str
    uri: str
    size_bytes: int
    state: str
    readers: tuple[str, ...] = field(default_factory=tuple)


def read_by(storage: str, experiment: Experiment) -> list[str]:
    """The datasets an experiment reads (its shared stages' trees that are datasets, not old trees read in place)."""
    return [
        plan.dataset_name(s)
        for s in plan.stages(experiment, single_machine=True)
        if plan.dataset_name(s) and stored.stage_tree(storage, experiment.name, s).at is not None
    ]


def readers(storage: str) -> dict[str, list[str]]:
    """Each dataset's readers: the stored experiments (with a readable spec) that read it, by name."""
    found: dict[str, list[str]] = {}
    for name in store.list_names(store.join(storage, "experiments")):
        try:
            experiment = stored.stored_experiment(experiment_uri(storage, name))
        except (SpecError, UserError):
            continue
        if experiment is None:
            continue
        for dataset in read_by(storage, experiment):
            found.setdefault(dataset, []).append(name)
    return found


def _state(facts: StageFacts, fingerprint: str) -> str:
    if facts.complete_for(fingerprint):
        return "complete"
    if facts.claim is not None:
        return "running"
    if facts.failed is not None:
        return "failed"
    return "partial" if facts.parts_done else "empty"


def listing(storage: str) -> list[Dataset]:
    """Every dataset under `<storage>/datasets`, with its size (the sum of its objects'), state and readers."""
    fs, _ = store.filesystem(storage)
    by = readers(storage)
    result = []
    for name in store.list_names(datasets_uri(storage)):
        match = NAME.fullmatch(name)
        if not match:
            continue
        uri = store.join(datasets_uri(storage), name)
        _, path = store.filesystem(uri)
        size = int(fs.du(path, total=True)) if fs.exists(path) else 0
        facts = read_facts(StageTree(uri, match["stage"], uri))
        result.append(
            Dataset(
                name,
                match["stage"],
                match["fingerprint"],
                uri,
                size,
                _state(facts, match["fingerprint"]),
                tuple(by.get(name, ())),
            )
        )
    return result


def human_bytes(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"


def lines(storage: str) -> Iterator[str]:
    """`secoctl datasets`: a header and one line a dataset."""
    found = listing(storage)
    if not found:
        yield f"no datasets in {store.join(storage, DATASETS)}"
        return
    width = max(len(d.name) for d in found)
    yield f"{'DATASET':<{width}}  {'SIZE':>9}  {'STATE':<8}  EXPERIMENTS"
    for dataset in found:
        yield (
            f"{dataset.name:<{width}}  {human_bytes(dataset.size_bytes):>9}  {dataset.state:<8}  "
            f"{', '.join(dataset.readers) or '-'}"
        )


def purge(storage: str, experiment: Experiment) -> Iterator[str]:
    """After an experiment's own tree is gone: remove each dataset it read that no other stored experiment reads,
    and say which experiments keep the others."""
    others = readers(storage)
    for dataset in read_by_spec(experiment):
        uri = store.join(datasets_uri(storage), dataset)
        keep = [name for name in others.get(dataset, []) if name != experiment.name]
        if keep:
            yield f"kept {uri}: experiments {', '.join(keep)} read it"
        elif store.exists(uri):
            store.remove(uri)
            yield f"removed {uri}"


def read_by_spec(experiment: Experiment) -> list[str]:
    """The datasets an experiment's spec names, whether or not they exist yet."""
    return [name for s in plan.stages(experiment, single_machine=True) if (name := plan.dataset_name(s))]
