"""An experiment's storage tree as both executors and the commands read it: which experiments a storage
holds, each one's stored spec, what each stage's markers say, and the spec's first write, which refuses a
change that contradicts work done."""

from __future__ import annotations

from collections.abc import Callable

from secoctl import plan, store
from secoctl.errors import SpecError, UserError
from secoctl.spec import Experiment
from secoctl.spec.file import read_experiment, spec_document
from secoctl.tree import (
    StageFacts,
    StageTree,
    dataset_uri,
    experiment_names,
    experiment_uri,
    read_facts,
    spec_uri,
    storage_holding,
)


def stage_tree(storage: str, name: str, stage: plan.Stage) -> StageTree:
    """The one place that says where a stage's tree is: a shared stage's (collect, shards) is its dataset,
    `<storage>/datasets/<stage>-<fingerprint>`; every other stage's is `<storage>/experiments/<name>/<stage>`.

    An experiment stored before datasets were shared kept its collect and shards under its own tree. That old
    tree is read in place, not moved, while it is complete for the same fingerprint and the dataset is not:
    nothing is copied, its parts' index keeps naming the shards where they are, and a later purge of the
    experiment removes it with the rest of its tree. An old tree left incomplete is not resumed; the stage
    runs into the dataset instead."""
    own = StageTree(experiment_uri(storage, name), stage.name)
    dataset = plan.dataset_name(stage)
    if dataset is None:
        return own
    shared = StageTree(own.experiment_uri, stage.name, dataset_uri(storage, dataset))
    if not store.exists(shared.success):
        old = store.read_json_or_none(own.success)
        if isinstance(old, dict) and old.get("fingerprint") == stage.fingerprint:
            return own
    return shared


def named_stage_tree(experiment: Experiment, stage: str) -> StageTree:
    """`stage_tree` for a stage named in a process that has only the spec (a part, the log wrapper); a stage this
    process's plan does not hold (one only its parent's plan adds) is never shared, so its tree is the
    experiment's own."""
    storage = storage_of(experiment)
    try:
        return stage_tree(storage, experiment.name, plan.stage(experiment, stage))
    except KeyError:
        return StageTree(experiment_uri(storage, experiment.name), stage)


def storage_of(experiment: Experiment) -> str:
    """The storage an experiment's tree is on (store.resolve's precedence; a stored spec names its own)."""
    return store.storage(own=experiment.spec.storage)


def read_experiment_facts(storage: str, experiment: Experiment, folder: str | None = None) -> dict[str, StageFacts]:
    """Every stage's facts; `folder`, the name the experiment is stored under, when `status` lists it (a folder
    renamed by hand still shows what it holds)."""
    return {
        s.name: read_facts(stage_tree(storage, folder or experiment.name, s))
        for s in plan.stages(experiment, single_machine=True)
    }


def stored_experiment(root: str) -> Experiment | None:
    location = spec_uri(root)
    if not store.exists(location):
        return None
    return read_experiment(location)


def study_experiments(storage: str, study: str) -> list[str]:
    """The stored experiments expanded from a study (their spec's `metadata.study.name`); unreadable ones left out."""
    found = []
    for name in store.list_names(store.join(storage, "experiments")):
        try:
            experiment = stored_experiment(experiment_uri(storage, name))
        except (SpecError, UserError):
            continue
        if experiment is not None and experiment.metadata.study is not None and experiment.metadata.study.name == study:
            found.append(name)
    return found


def named(storage: str, name: str) -> tuple[str, Experiment | None]:
    """The tree of a stored experiment and its spec, or a user error naming what exists."""
    with store.reported(storage):
        experiment_names(storage, name)
        root = experiment_uri(storage, name)
        return root, stored_experiment(root)


def prepare_storage(
    root: str, experiment: Experiment, alive: Callable[[dict[str, StageFacts], str], set[int]] | None = None
) -> None:
    """Store the spec at `root` (the experiment's tree), refusing a change that would contradict work already
    done, and, given `alive` (the processes still applying it), a second apply while one runs."""
    previous = stored_experiment(root)
    if previous is not None:
        facts = read_experiment_facts(storage_holding(root), previous)
        touched = [
            name
            for name in plan.changed_stages(previous, experiment)
            if facts.get(name) and (facts[name].success is not None or facts[name].parts_done)
        ]
        if touched:
            first = touched[0]
            raise UserError(
                f"spec.{first} changed after stage {first} of experiment {experiment.name} did work; "
                f"give the changed spec a new metadata.name, or run `secoctl delete {experiment.name} --purge` "
                "to start over"
            )
        running = alive(facts, experiment.name) if alive else set()
        if running:
            raise UserError(
                f"experiment {experiment.name} is being applied by process {min(running)}; "
                f"wait for it or `secoctl delete {experiment.name}` to stop it"
            )
    store.write_text(spec_uri(root), datasets_comment(storage_holding(root), experiment) + spec_document(experiment))


def datasets_comment(storage: str, experiment: Experiment) -> str:
    """The stored spec's first line, for a person reading the tree: the datasets this experiment reads.

    The code never parses it: each name is `<stage>-<fingerprint>` of the spec below it (plan.dataset_name)."""
    names = [
        name
        for s in plan.stages(experiment, single_machine=True)
        if (name := plan.dataset_name(s)) and stage_tree(storage, experiment.name, s).at is not None
    ]
    return f"# reads datasets: {', '.join(names)} (under {dataset_uri(storage, '')})\n" if names else ""


def experiment_location(experiment: Experiment) -> str:
    """Where an experiment's tree is: on its spec's own storage (every apply stores the spec with it), else on
    the storage the environment configures (store.resolve)."""
    return experiment_uri(storage_of(experiment), experiment.name)
