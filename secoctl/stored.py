"""An experiment's storage tree as both executors and the commands read it: which experiments a storage
holds, each one's stored spec, what each stage's markers say, and the spec's first write, which refuses a
change that contradicts work done."""

from __future__ import annotations

from collections.abc import Callable

from secoctl import plan, store
from secoctl.errors import UserError
from secoctl.spec import Experiment
from secoctl.spec.file import read_experiment, spec_document
from secoctl.tree import StageFacts, StageTree, experiment_names, experiment_uri, read_facts, spec_uri


def read_experiment_facts(root: str, experiment: Experiment) -> dict[str, StageFacts]:
    return {s.name: read_facts(StageTree(root, s.name)) for s in plan.stages(experiment, single_machine=True)}


def stored_experiment(root: str) -> Experiment | None:
    location = spec_uri(root)
    if not store.exists(location):
        return None
    return read_experiment(location)


def named(storage: str, name: str) -> tuple[str, Experiment | None]:
    """The tree of a stored experiment and its spec, or a user error naming what exists."""
    with store.reported(storage):
        experiment_names(storage, name)
        root = experiment_uri(storage, name)
        return root, stored_experiment(root)


def prepare_storage(root: str, experiment: Experiment,
                    alive: Callable[[dict[str, StageFacts], str], set[int]] | None = None) -> None:
    """Store the spec at `root`, refusing a change that would contradict work already done, and,
    given `alive` (the processes still applying it), a second apply while one runs."""
    previous = stored_experiment(root)
    if previous is not None:
        facts = read_experiment_facts(root, previous)
        touched = [name for name in plan.changed_stages(previous, experiment)
                   if facts.get(name) and (facts[name].success is not None or facts[name].parts_done)]
        if touched:
            first = touched[0]
            raise UserError(
                f"spec.{first} changed after stage {first} of experiment {experiment.name} did work; "
                f"give the changed spec a new metadata.name, or run `secoctl delete {experiment.name} --purge` "
                "to start over"
            )
        running = alive(facts, experiment.name) if alive else set()
        if running:
            raise UserError(f"experiment {experiment.name} is being applied by process {min(running)}; "
                            f"wait for it or `secoctl delete {experiment.name}` to stop it")
    store.write_text(spec_uri(root), spec_document(experiment))


def experiment_location(experiment: Experiment) -> str:
    """Where an experiment's tree is: on its spec's own storage (every apply stores the spec with it), else on
    the storage the environment configures (store.resolve)."""
    return experiment_uri(store.storage(own=experiment.spec.storage), experiment.name)
