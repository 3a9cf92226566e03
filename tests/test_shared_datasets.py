"""Datasets shared by fingerprint: experiments that ask for the same collect and shards read one copy, made once
under a claim on the storage, with small real stage processes (tests/executor/fake_stage.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from secoctl import claim, plan, store
from secoctl.backends.local.executor import LocalExecutor, Observer
from secoctl.datasets import human_bytes
from secoctl.spec.file import load_documents
from secoctl.stored import prepare_storage, stage_tree
from secoctl.tree import StageFacts, StageTree, commit_stage, experiment_uri, spec_uri
from tests.conftest import ROOT, run_cli
from tests.executor.fake_stage_argv import fake_argv
from tests.s3 import s3_bucket

SPEC = """apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {{name: {name}}}
spec:
  collect: {{workers: 4}}
  pretrain: {{nodes: 1, gpusPerNode: 1, batchSize: 32, queueSize: {queue}}}
  evaluate: [{{task: eurosat}}]
  publish: {{name: {name}-weights}}
"""
STAGES = ("collect", "shards", "pretrain", "evaluate", "publish")


def experiment(name: str, queue: int = 64, storage: Path | None = None):
    loaded = load_documents(SPEC.format(name=name, queue=queue), f"{name}.yaml")[0]
    return loaded.with_storage(storage.as_uri()) if storage else loaded


def folder(storage: Path, name: str, stage: str) -> Path:
    uri = stage_tree(storage.as_uri(), name, plan.stage(experiment(name), stage)).uri
    return Path(uri.removeprefix("file://"))


def ledger(storage: Path, name: str, stage: str) -> list[int]:
    """Each part's executions, in order of part (the fake stage appends one entry each time it does the work)."""
    found = folder(storage, name, stage) / "ledger"
    return sorted(int(p.name.split("-")[0]) for p in found.iterdir()) if found.exists() else []


def executor(storage: Path, **options) -> LocalExecutor:
    return LocalExecutor(storage.as_uri(), argv_for=fake_argv, concurrency=2, **options)


def test_the_second_experiment_reads_the_first_ones_dataset_and_collects_nothing(storage):
    executor(storage).apply(experiment("first"))
    executor(storage).apply(experiment("second", queue=128))
    dataset = folder(storage, "second", "collect")
    assert dataset == folder(storage, "first", "collect") and dataset.parent.name == "datasets"
    assert ledger(storage, "second", "collect") == [0, 1, 2, 3], "each collect part ran once for both"
    assert ledger(storage, "second", "shards") == [0, 1, 2, 3]
    for name in ("first", "second"):
        assert ledger(storage, name, "pretrain") == [0] and ledger(storage, name, "publish") == [0]
        assert not (storage / "experiments" / name / "collect").exists()
    assert not (dataset / "_CLAIM").exists()
    stored_spec = (storage / "experiments" / "second" / "spec.yaml").read_text()
    shards = folder(storage, "second", "shards").name
    under = (storage / "datasets").as_uri()
    assert stored_spec.startswith(f"# reads datasets: {dataset.name}, {shards} (under {under})\n")
    rows = json.loads(run_cli("status", "-o", "json", storage=storage).stdout)
    assert {(r["experiment"], r["stage"]): r["state"] for r in rows} == {
        (name, stage): "complete" for name in ("first", "second") for stage in STAGES
    }


def test_two_applies_at_the_same_moment_run_each_part_once_and_both_complete(storage, tmp_path):
    """Two executors in two processes race for the claim: one runs every part, the other waits, then reuses."""
    env = dict(os.environ, FAKE_SLEEP_S="0.2", PYTHONPATH=str(ROOT))
    applies = []
    for name, queue in (("left", 64), ("right", 128)):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(SPEC.format(name=name, queue=queue))
        applies.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.executor.run_apply", storage.as_uri(), str(spec)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [apply.communicate(timeout=300)[0] for apply in applies]
    assert [apply.returncode for apply in applies] == [0, 0], outputs
    assert ledger(storage, "left", "collect") == [0, 1, 2, 3], "every collect part exactly once"
    assert ledger(storage, "left", "shards") == [0, 1, 2, 3]
    assert ledger(storage, "left", "pretrain") == [0] and ledger(storage, "right", "pretrain") == [0]
    assert ledger(storage, "left", "publish") == [0] and ledger(storage, "right", "publish") == [0]


class Recorder(Observer):
    def __init__(self):
        self.waits: list[tuple[str, dict]] = []

    def dataset_wait(self, stage, held):
        self.waits.append((stage.name, held))


def test_a_stale_claim_is_taken_over_and_the_parts_it_committed_are_not_run_again(storage):
    """An owner on another host stopped beating after two of four parts: the waiter takes over and runs two."""
    made = experiment("taker", storage=storage)
    prepare_storage(experiment_uri(storage.as_uri(), "taker"), made)
    tree = stage_tree(storage.as_uri(), "taker", plan.stage(made, "collect"))
    for index in (0, 1):
        store.write_json(tree.part_done(index), {"index": index, "summary": {"index": index}})
    stale = {"id": "gone", "experiment": "vanished", "host": "another-host", "pid": 1, "heartbeat_at": time.time()}
    store.write_json(tree.claim, stale)
    recorder = Recorder()
    executor(storage, observer=recorder, stale_s=0.5, wait_poll_s=0.05).apply(made)
    assert recorder.waits[0] == ("collect", stale)
    assert ledger(storage, "taker", "collect") == [2, 3], "the parts committed before were not run again"
    assert ledger(storage, "taker", "publish") == [0]
    assert not store.exists(tree.claim) and not [n for n in store.list_names(tree.uri) if n.startswith("_TAKEOVER")]


def test_a_claim_left_by_a_process_gone_on_this_host_is_taken_over_at_once(storage):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    made = experiment("again", storage=storage)
    prepare_storage(experiment_uri(storage.as_uri(), "again"), made)
    tree = stage_tree(storage.as_uri(), "again", plan.stage(made, "collect"))
    store.write_json(
        tree.claim,
        {
            "id": "killed",
            "experiment": "again",
            "host": socket.gethostname(),
            "pid": dead.pid,
            "pid_started": 1,
            "heartbeat_at": time.time(),
        },
    )
    executor(storage, stale_s=3600, wait_poll_s=0.05).apply(made)  # far longer than the test may take
    assert ledger(storage, "again", "collect") == [0, 1, 2, 3]


def test_status_says_which_experiment_holds_the_dataset_a_stage_waits_for(storage):
    made = experiment("waiter", storage=storage)
    prepare_storage(experiment_uri(storage.as_uri(), "waiter"), made)
    collect = plan.stage(made, "collect")
    tree = stage_tree(storage.as_uri(), "waiter", collect)
    store.write_json(tree.claim, claim.owner("holder", executor="local"))
    rows = json.loads(run_cli("status", "waiter", "-o", "json", storage=storage).stdout)
    assert (rows[0]["state"], rows[0]["detail"]) == (
        "waiting",
        f"waits for dataset collect-{collect.fingerprint}, collected by experiment holder",
    )
    store.write_json(tree.claim, {**claim.owner("holder"), "heartbeat_at": time.time() - 2 * claim.STALE_S})
    rows = json.loads(run_cli("status", "waiter", "-o", "json", storage=storage).stdout)
    assert rows[0]["state"] == "ready", "a claim whose owner stopped beating holds nothing"


def test_of_many_creates_of_one_file_exactly_one_wins(tmp_path):
    uri = (tmp_path / "d" / "_CLAIM").as_uri()
    won, start = [], threading.Barrier(8)

    def create(i: int) -> None:
        start.wait()
        won.append((i, store.create_exclusive(uri, f"{i}".encode())))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, ok in won if ok]
    assert len(winners) == 1 and store.read_text(uri) == str(winners[0])
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["_CLAIM"], "no temporary left"


def test_of_concurrent_conditional_puts_to_s3_exactly_one_wins(tmp_path):
    """The pinned SeaweedFS answers If-None-Match: an older release let concurrent PUTs through (FACTS.md)."""
    with s3_bucket(tmp_path / "weed", "seco-claims"):
        for trial in range(5):
            uri = f"s3://seco-claims/t{trial}/_CLAIM"
            won, start = [], threading.Barrier(8)

            def create(i: int) -> None:
                start.wait()
                won.append((i, store.create_exclusive(uri, f"{i}".encode())))

            threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            winners = [i for i, ok in won if ok]
            assert len(winners) == 1 and store.read_text(uri) == str(winners[0])
            assert store.create_exclusive(uri, b"late") is False


def test_datasets_lists_each_dataset_with_its_size_state_and_readers(storage):
    executor(storage).apply(experiment("first"))
    executor(storage).apply(experiment("second", queue=128))
    (storage / "datasets" / "eurosat").mkdir()  # a task's data kept beside them is no dataset
    shown = run_cli("datasets", storage=storage)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["DATASET", "SIZE", "STATE", "EXPERIMENTS"]
    for stage in ("collect", "shards"):
        name = folder(storage, "first", stage).name
        line = next(line for line in lines if line.startswith(name))
        size = sum(p.stat().st_size for p in folder(storage, "first", stage).rglob("*") if p.is_file())
        assert line.split()[1:] == [*human_bytes(size).split(), "complete", "first,", "second"]
    assert len(lines) == 3


def test_purge_removes_a_dataset_only_with_its_last_reader(storage):
    executor(storage).apply(experiment("first"))
    executor(storage).apply(experiment("second", queue=128))
    collect, shards = folder(storage, "first", "collect"), folder(storage, "first", "shards")
    purged = run_cli("delete", "first", "--purge", storage=storage)
    assert purged.returncode == 0, purged.stderr
    assert not (storage / "experiments" / "first").exists() and collect.exists() and shards.exists()
    assert f"kept {collect.as_uri()}: experiments second read it" in purged.stdout.splitlines()
    purged = run_cli("delete", "second", "--purge", storage=storage)
    assert purged.returncode == 0, purged.stderr
    assert not collect.exists() and not shards.exists()
    assert f"removed {collect.as_uri()}" in purged.stdout.splitlines()


def old_release_tree(storage: Path, name: str, through: tuple[str, ...]):
    """A stored experiment as the release before shared datasets wrote it: spec.yaml beside every stage's own
    folder under experiments/<name>/ (parts/NNNNN.json, index.json, then _SUCCESS with the stage's fingerprint)."""
    made = experiment(name, storage=storage)
    root = experiment_uri(storage.as_uri(), name)
    from secoctl.render import spec_document

    store.write_text(spec_uri(root), spec_document(made))
    for stage in plan.stages(made, single_machine=True):
        if stage.name not in through:
            break
        tree = StageTree(root, stage.name)
        for index in range(stage.parts):
            store.write_text(tree.path("ledger", f"{index:05d}-0"), "done")
            store.write_json(
                tree.part_done(index), {"index": index, "started_at": 0, "finished_at": 0, "summary": {"index": index}}
            )
        commit_stage(tree, stage.fingerprint, stage.parts)
    return made


def test_an_experiment_stored_before_shows_in_status_and_resumes_on_its_old_collect_and_shards(storage):
    old_release_tree(storage, "old", ("collect", "shards"))
    rows = json.loads(run_cli("status", "old", "-o", "json", storage=storage).stdout)
    assert [(r["stage"], r["state"]) for r in rows] == [
        ("collect", "complete"),
        ("shards", "complete"),
        ("pretrain", "ready"),
        ("evaluate", "waiting"),
        ("publish", "waiting"),
    ]
    executor(storage).apply(experiment("old"))
    old = storage / "experiments" / "old"
    assert folder(storage, "old", "collect") == old / "collect", "read in place"
    assert ledger(storage, "old", "collect") == [0, 1, 2, 3], "the old parts, none run again"
    assert ledger(storage, "old", "pretrain") == [0] and ledger(storage, "old", "publish") == [0]
    assert not (storage / "datasets").exists()
    rows = json.loads(run_cli("status", "old", "-o", "json", storage=storage).stdout)
    assert {r["state"] for r in rows} == {"complete"}
    listed = run_cli("datasets", storage=storage)
    assert listed.returncode == 0 and listed.stdout.startswith("no datasets")


class Namespace:
    """A namespace as the driver sees it: the Jobs `apply` made, suspended. A Job the driver starts runs its parts
    (each commits its `parts/NNNNN.json` in the stage's tree) and completes at the driver's next look."""

    def __init__(self, experiment, namespace: str, started: list[str]):
        from secoctl.render import render

        self.namespace, self.experiment, self.started = namespace, experiment, started
        self.jobs = {o["metadata"]["name"]: o for o in render(experiment, namespace) if o["kind"] == "Job"}

    def get(self, kind, name):
        return self.jobs.get(name)

    def patch(self, kind, name, change):
        job = self.jobs[name]
        job["spec"]["suspend"] = False
        stage = plan.stage(self.experiment, job["metadata"]["labels"]["seco.dev/stage"])
        self.started.append(f"{self.namespace}/{name}")
        tree = stage_tree(store.storage(own=self.experiment.spec.storage), self.experiment.name, stage)
        for index in range(stage.parts):
            store.write_json(tree.part_done(index), {"index": index, "summary": {"job": name}})
        job["status"] = {"succeeded": stage.parts, "conditions": [{"type": "Complete", "status": "True"}]}
        return job

    def pods(self, selector):
        return []


def test_two_drivers_in_two_namespaces_run_one_collect_job_and_the_other_waits(storage, capsys):
    """The claim is on the storage, so two namespaces pointing at one bucket still collect once."""
    from secoctl.driver import Driver

    started: list[str] = []
    drivers = [
        Driver(
            experiment(name, queue, storage), Namespace(experiment(name, queue, storage), name, started), poll_s=0.05
        )
        for name, queue in (("north", 64), ("south", 128))
    ]
    # North holds the claim when south's driver starts: south waits, then finds the dataset complete.
    tree = stage_tree(storage.as_uri(), "north", plan.stage(experiment("north"), "collect"))
    mine = claim.owner("north", executor="kubernetes", namespace="north")
    assert claim.acquire(tree, plan.stage(experiment("north"), "collect").fingerprint, mine, lambda held: None)
    results = {}
    south = threading.Thread(target=lambda: results.update(south=drivers[1].run()))
    south.start()
    deadline = time.monotonic() + 60
    while '"event": "dataset_wait"' not in capsys.readouterr().out:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    claim.release(tree, mine)
    results["north"] = drivers[0].run()
    south.join(timeout=120)
    assert results == {"north": 0, "south": 0}
    collects = [name for name in started if name.endswith("-collect") or name.endswith("-shards")]
    assert len([n for n in collects if n.endswith("-collect")]) == 1 and len(collects) == 2, started
    assert {n for n in started if n.endswith("-pretrain")} == {"north/north-pretrain", "south/south-pretrain"}


def test_a_studys_variants_share_one_dataset_and_status_and_delete_take_the_studys_name(storage):
    from secoctl.spec.file import load_files

    variants = load_files([ROOT / "examples" / "quickstart-study.yaml"])
    for variant in variants:
        executor(storage).apply(variant)
    names = sorted(v.name for v in variants)
    collect = stage_tree(storage.as_uri(), names[0], plan.stage(variants[0], "collect"))
    assert {stage_tree(storage.as_uri(), v.name, plan.stage(v, "collect")).uri for v in variants} == {collect.uri}
    runs = sorted(int(p.split("-")[0]) for p in store.list_names(collect.path("ledger")))
    assert runs == list(range(variants[0].spec.collect.workers)), "one run of each collect part for the study"
    rows = json.loads(run_cli("status", "quickstart-study", "-o", "json", storage=storage).stdout)
    assert sorted({r["experiment"] for r in rows}) == names and {r["state"] for r in rows} == {"complete"}
    deleted = run_cli("delete", "quickstart-study", "--purge", storage=storage)
    assert deleted.returncode == 0, deleted.stderr
    assert not (storage / "experiments").exists() or not list((storage / "experiments").iterdir())
    assert not store.exists(collect.uri), deleted.stdout
    assert f"kept {collect.uri}: experiments {names[1]} read it" in deleted.stdout


def test_a_cluster_status_row_names_the_experiment_collecting_the_dataset_its_stage_waits_for():
    from secoctl.backends.kubernetes.jobstate import JobFacts
    from secoctl.status import cluster_rows

    made = experiment("south")
    held = claim.owner("north", executor="kubernetes", namespace="north")
    statuses = plan.assess(made, {"collect": StageFacts(claim=held)})
    row = cluster_rows("south", {"collect": JobFacts("waiting")}, statuses, {})[0]
    assert (row.state, row.reason) == (
        "waiting",
        f"waits for dataset {plan.dataset_name(plan.stage(made, 'collect'))}, collected by experiment north",
    )


def test_a_datasets_name_depends_on_what_decides_its_bytes_only():
    """Never the experiment's name, its resources, its credentials, its image or its request pacing."""
    from secoctl.spec import parse_experiment

    def named(name: str, image: str, collect: dict) -> list[str]:
        spec = {"image": image, "collect": {"workers": 2, "locations": 64, **collect}}
        made = parse_experiment(
            {"apiVersion": "seco.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": name}, "spec": spec}
        )
        return [plan.dataset_name(plan.stage(made, stage)) for stage in ("collect", "shards")]

    base = named("one", "registry.example/secoctl:1", {})
    assert (
        named(
            "two",
            "registry.example/secoctl:2",
            {
                "resources": {"cpu": "8", "memory": "32Gi"},
                "subscriptionKeySecret": {"secretName": "pc"},
                "inFlight": 64,
            },
        )
        == base
    )
    assert named("one", "registry.example/secoctl:1", {"seed": 1}) != base


def test_deleting_the_collecting_experiment_lets_the_waiting_one_take_over_and_finish(storage, tmp_path):
    """The owner's apply is stopped by `delete`: its claim goes with it, and the waiter runs the parts left."""
    env = dict(os.environ, FAKE_SLEEP_S="0.3", PYTHONPATH=str(ROOT))

    def apply(name: str, queue: int) -> subprocess.Popen:
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(SPEC.format(name=name, queue=queue))
        return subprocess.Popen(
            [sys.executable, "-m", "tests.executor.run_apply", storage.as_uri(), str(spec)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    first = apply("first", 64)
    dataset = folder(storage, "first", "collect")
    deadline = time.monotonic() + 120
    while not (dataset / "_RUNNING").exists():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = apply("second", 128)

    def states() -> set[str]:
        shown = run_cli("status", "second", "-o", "json", storage=storage)
        return {r["state"] for r in json.loads(shown.stdout)} if shown.returncode == 0 else set()

    while "waiting" not in states():  # its spec is stored, and its collect waits on the first one's claim
        assert time.monotonic() < deadline and second.poll() is None
        time.sleep(0.1)
    deleted = run_cli("delete", "first", storage=storage)
    assert deleted.returncode == 0 and "stopped the local run of first" in deleted.stdout, deleted.stderr
    first.communicate(timeout=60)
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output
    assert ledger(storage, "second", "collect") == [0, 1, 2, 3], "each part once across both owners"
    assert ledger(storage, "second", "publish") == [0] and ledger(storage, "first", "publish") == []


def test_apply_says_which_experiment_collects_the_dataset_it_waits_for(capsys):
    from secoctl.console import RichObserver

    collect = plan.stage(experiment("waiter"), "collect")
    RichObserver().dataset_wait(collect, {"experiment": "[bold]holder"})  # a name from storage: no markup
    assert capsys.readouterr().err.strip() == (
        f"collect: waits for dataset collect-{collect.fingerprint}, collected by experiment [bold]holder"
    )
