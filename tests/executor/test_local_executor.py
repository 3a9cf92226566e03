"""The embedded executor's contract, with small real stage processes (tests/executor/fake_stage.py)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from secoctl import plan, store
from secoctl.backends.local.executor import LocalExecutor, StageFailed, running_record
from secoctl.spec.file import load_documents
from secoctl.stored import stage_tree
from tests.conftest import ROOT, run_cli
from tests.executor.fake_stage_argv import fake_argv

SPEC = """apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {name: contract}
spec:
  collect: {workers: 4}
  pretrain: {nodes: 2, gpusPerNode: 1, batchSize: 32, queueSize: 64}
  evaluate: [{task: eurosat}]
  publish: {name: contract-weights}
"""
STAGES = ("collect", "shards", "pretrain", "evaluate", "publish")


def stage_dir(storage: Path, stage: str) -> Path:
    """Where the plan puts the stage's tree: its dataset's folder for collect and shards."""
    uri = stage_tree(storage.as_uri(), "contract", plan.stage(experiment(), stage)).uri
    return Path(uri.removeprefix("file://"))


def ledger(storage: Path, stage: str) -> list[int]:
    folder = stage_dir(storage, stage) / "ledger"
    return sorted(int(p.name.split("-")[0]) for p in folder.iterdir()) if folder.exists() else []


def executor(storage: Path) -> LocalExecutor:
    return LocalExecutor(storage.as_uri(), argv_for=fake_argv, concurrency=2)


def experiment():
    return load_documents(SPEC, "contract.yaml")[0]


def test_stages_run_in_order_each_part_once_and_commit(storage):
    executor(storage).apply(experiment())
    assert ledger(storage, "collect") == [0, 1, 2, 3]
    assert [ledger(storage, s) for s in STAGES[2:]] == [[0], [0], [0]]  # one node on this machine
    for stage in STAGES:
        tree = stage_dir(storage, stage)
        assert (tree / "_SUCCESS").exists() and not (tree / "_RUNNING").exists()
        assert (tree / "logs" / "00000.log").read_text().count('"event": "progress"') >= 5
    index = json.loads((stage_dir(storage, "collect") / "index.json").read_text())
    assert [part["summary"]["index"] for part in index["parts"]] == [0, 1, 2, 3]


def test_reapplying_a_complete_experiment_runs_nothing(storage):
    executor(storage).apply(experiment())
    executor(storage).apply(experiment())
    assert ledger(storage, "collect") == [0, 1, 2, 3] and ledger(storage, "publish") == [0]


def test_a_failure_is_surfaced_with_the_parts_last_log_lines_and_recorded(storage, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_STAGE", "pretrain")
    with pytest.raises(StageFailed) as failure:
        executor(storage).apply(experiment())
    assert (failure.value.stage, failure.value.exit_code) == ("pretrain", 3)
    assert "simulated failure in part 0" in failure.value.log_tail
    assert failure.value.message is None  # a part that named no cause: the CLI shows the log's last lines
    assert ledger(storage, "evaluate") == []
    status = json.loads(run_cli("status", "-o", "json", storage=storage).stdout)
    assert [(r["stage"], r["state"]) for r in status] == [
        ("collect", "complete"),
        ("shards", "complete"),
        ("pretrain", "failed"),
        ("evaluate", "waiting"),
        ("publish", "waiting"),
    ]
    monkeypatch.delenv("FAKE_FAIL_STAGE")
    executor(storage).apply(experiment())
    assert ledger(storage, "collect") == [0, 1, 2, 3] and ledger(storage, "publish") == [0]


def test_a_killed_executor_leaves_a_consistent_tree_and_the_next_apply_resumes(storage, tmp_path):
    spec_file = tmp_path / "contract.yaml"
    spec_file.write_text(SPEC)
    env = dict(os.environ, FAKE_SLEEP_S="0.4", PYTHONPATH=str(ROOT))
    apply = subprocess.Popen(
        [sys.executable, "-m", "tests.executor.run_apply", storage.as_uri(), str(spec_file)], cwd=ROOT, env=env
    )
    parts = stage_dir(storage, "collect") / "parts"
    deadline = time.monotonic() + 60
    while not (parts.exists() and len(list(parts.iterdir())) >= 2):  # the first two of four parts
        assert time.monotonic() < deadline and apply.poll() is None
        time.sleep(0.05)
    apply.send_signal(signal.SIGKILL)
    apply.wait()
    time.sleep(0.5)  # the parts die with their executor
    done_before = len(list(parts.iterdir()))
    assert 2 <= done_before < 4
    status = json.loads(run_cli("status", "contract", "-o", "json", storage=storage).stdout)
    assert status[0]["state"] == "interrupted"
    executor(storage).apply(experiment())
    assert ledger(storage, "collect") == [0, 1, 2, 3], "every part exactly once across the two runs"
    assert ledger(storage, "publish") == [0]


def test_a_changed_spec_is_refused_once_its_stage_did_work(storage, tmp_path):
    executor(storage).apply(experiment())
    spec_file = tmp_path / "changed.yaml"
    spec_file.write_text(SPEC.replace("workers: 4", "workers: 4, seed: 7"))
    result = run_cli("apply", "--local", str(spec_file), storage=storage)
    assert result.returncode == 2
    assert "spec.collect changed after stage collect of experiment contract did work" in result.stderr


def test_status_logs_and_delete_tell_the_story(storage):
    executor(storage).apply(experiment())
    table = run_cli("status", storage=storage)
    assert table.returncode == 0
    for stage in STAGES:
        assert stage in table.stdout
    assert table.stdout.count("complete") == 5
    logs = run_cli("logs", "contract", "--stage", "collect", "--index", "2", "-o", "json", storage=storage)
    assert '"index": 2' in logs.stdout and '"index": 1' not in logs.stdout
    bad = run_cli("logs", "contract", "--stage", "train", storage=storage)
    assert bad.returncode == 2 and "choose one of collect, shards, pretrain, evaluate, publish" in bad.stderr
    missing = run_cli("status", "nope", storage=storage)
    assert missing.returncode == 2 and "no experiment 'nope'" in missing.stderr
    assert run_cli("delete", "contract", "--purge", storage=storage).returncode == 0
    assert not (storage / "experiments" / "contract").exists()


def test_a_configured_cluster_takes_apply_and_local_keeps_it_on_this_machine(storage, tmp_path, monkeypatch):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")  # present, so apply goes to the cluster
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    spec_file = tmp_path / "contract.yaml"
    spec_file.write_text(SPEC)
    result = run_cli("apply", str(spec_file), storage=storage)
    assert result.returncode == 2 and "cannot use the kubeconfig" in result.stderr
    assert "Traceback" not in result.stderr and list(storage.iterdir()) == []


@pytest.mark.parametrize(
    "record",
    [
        lambda pid: {"pid": pid, "host": socket.gethostname(), "started_at": time.time(), "executor": "local"},
        lambda pid: {**running_record(pid), "pid_started": running_record(pid)["pid_started"] - 1},
        running_record,  # forged: every field /proc shows copied, but the process holds no apply's token
    ],
    ids=["without-start-time", "other-start-time", "forged"],
)
def test_delete_never_signals_a_process_that_took_over_a_stale_records_pid(record, storage):
    """A SIGKILLed apply leaves `_RUNNING` behind; its PID may since name an unrelated process."""
    executor(storage).prepare(experiment())
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        running = stage_dir(storage, "collect") / "_RUNNING"
        running.parent.mkdir(parents=True)
        running.write_text(json.dumps(record(unrelated.pid)))
        status = json.loads(run_cli("status", "contract", "-o", "json", storage=storage).stdout)
        assert status[0]["state"] == "interrupted"
        deleted = run_cli("delete", "contract", storage=storage)
        assert deleted.returncode == 0 and "stopped" not in deleted.stdout
        time.sleep(0.2)
        assert unrelated.poll() is None, "the unrelated process was signalled"
    finally:
        unrelated.kill()
        unrelated.wait()


# An apply started in the background by a script or CI inherits SIGINT ignored; delete must stop it too.
@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["foreground", "sigint-ignored"])
def test_delete_stops_a_running_apply(storage, tmp_path, sigint):
    spec_file = tmp_path / "contract.yaml"
    spec_file.write_text(SPEC)
    env = dict(os.environ, FAKE_SLEEP_S="1", PYTHONPATH=str(ROOT))
    apply = subprocess.Popen(
        [sys.executable, "-m", "tests.executor.run_apply", storage.as_uri(), str(spec_file)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )
    try:
        running = stage_dir(storage, "collect") / "_RUNNING"
        deadline = time.monotonic() + 60
        while not running.exists():
            assert time.monotonic() < deadline and apply.poll() is None
            time.sleep(0.05)
        deleted = run_cli("delete", "contract", storage=storage)
        assert deleted.returncode == 0 and f"(process {apply.pid})" in deleted.stdout
        assert apply.wait(timeout=30) != 0
        assert not running.exists()
    finally:
        apply.kill()
        apply.wait()


def test_a_pod_whose_service_account_is_unusable_gets_one_line_not_a_traceback(monkeypatch):
    """What the driver pod met on a real kubelet whose cluster published no root CA (ca.crt empty)."""
    from secoctl.backends.kubernetes.client import Cluster
    from secoctl.errors import UserError

    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(UserError, match="cannot use the pod's service account: "):
        Cluster()


def test_a_token_of_another_experiment_whose_name_starts_alike_is_not_this_ones(storage, tmp_path):
    """`mini-2`'s token file is no proof that a process applies `mini`: the whole token name is matched."""
    from secoctl.backends.local.executor import RunToken, is_alive_here

    other = RunToken("contract-2")
    try:
        record = {**running_record(os.getpid()), **other.record}
        assert is_alive_here(record, "contract-2")
        assert not is_alive_here(record, "contract"), "a prefix of another experiment's token was accepted"
    finally:
        other.close()


def test_a_second_apply_on_this_machine_is_refused_and_leaves_the_first_ones_markers(storage):
    """Two applies of one experiment: the one that finds the machine's lock held stops before touching the tree,
    so it can neither overwrite nor remove the first one's `_RUNNING`, nor write `_FAILED`."""
    from secoctl.errors import UserError
    from secoctl.process import sole

    first = executor(storage)
    first.prepare(experiment())
    running = storage / "experiments" / "contract" / "collect" / "_RUNNING"
    running.parent.mkdir(parents=True)
    running.write_text('{"pid": 1, "executor": "local"}')
    with sole(f"apply {first.location(experiment())}", "held by the first apply"):
        with pytest.raises(UserError, match="is being applied by another process on this machine"):
            executor(storage).apply(experiment())
    assert running.read_text() == '{"pid": 1, "executor": "local"}'
    assert not (running.parent / "_FAILED").exists()


def test_only_the_owner_of_a_running_marker_removes_it(storage):
    from secoctl.tree import StageTree, stage_run

    tree = StageTree((storage / "experiments" / "contract").as_uri(), "collect")
    with stage_run(tree, {"pid": 1}):
        (storage / "experiments" / "contract" / "collect" / "_RUNNING").write_text('{"pid": 2}')
    assert (storage / "experiments" / "contract" / "collect" / "_RUNNING").read_text() == '{"pid": 2}'
    with stage_run(tree, {"pid": 3}):
        pass
    assert not (storage / "experiments" / "contract" / "collect" / "_RUNNING").exists()


def test_weights_another_experiment_published_are_refused_by_validate_and_apply_before_any_stage(storage, tmp_path):
    """A copy of a spec under a new name would otherwise run every stage and fail at publish; the error names the
    settings that fix it (the spec has no --force)."""
    version = storage / "weights" / "contract-weights" / "1"
    version.mkdir(parents=True)
    (version / "item.json").write_text(json.dumps({"properties": {"secoctl:provenance": {"experiment": "first"}}}))
    (version / "SHA256SUMS").write_text("")
    spec_file = tmp_path / "contract.yaml"
    spec_file.write_text(SPEC)
    for command in ("validate", "apply"):
        result = run_cli(command, *(["--local"] if command == "apply" else []), str(spec_file), storage=storage)
        assert result.returncode == 2, result.stderr
        assert "contract-weights:1 are already published" in result.stderr and "by first" in result.stderr
        assert "spec.publish.version" in result.stderr and "spec.publish.force" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (storage / "experiments").exists()
    forced = spec_file.read_text().replace(
        "publish: {name: contract-weights}", "publish: {name: contract-weights, force: true}"
    )
    spec_file.write_text(forced)
    assert run_cli("validate", str(spec_file), storage=storage).returncode == 0


def test_what_killed_applies_left_in_tmp_goes_at_the_next_apply_and_at_purge(storage, tmp_path, monkeypatch):
    """Token files and part-log folders of SIGKILLed applies are removed; a token a live apply holds stays."""
    import tempfile

    from secoctl.backends.local.executor import LOGS_PREFIX, RunToken, sweep_leftovers

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale_token = RunToken("contract")
    stale_token.handle.close()  # as a killed apply's: the file stays, nobody holds it
    live_token = RunToken("contract")
    stale_logs = tmp_path / f"{LOGS_PREFIX}{2**22 + 7}-abc"  # no pid is this large: that apply is gone
    stale_logs.mkdir()
    other = RunToken("contract-2")
    other.handle.close()
    try:
        removed = sweep_leftovers("contract")
        assert set(removed) == {Path(stale_token.path), stale_logs}, removed
        assert Path(live_token.path).exists() and Path(other.path).exists()
    finally:
        live_token.close()
        Path(other.path).unlink(missing_ok=True)


def test_a_run_on_another_host_with_a_fresh_heartbeat_is_running_and_a_second_apply_is_refused(storage, tmp_path):
    """Two machines share one storage: a `_RUNNING` of another host whose heartbeat is fresh is a live run there,
    not an interrupted one; once the heartbeat is older than STALE_S it is interrupted and apply resumes it."""
    from secoctl import plan
    from secoctl.backends.local.executor import STALE_S
    from secoctl.stored import stage_tree

    prepared = executor(storage).prepare(experiment())
    tree = stage_tree(storage.as_uri(), "contract", plan.stage(prepared, "collect", single_machine=True))
    running = Path(tree.running.removeprefix("file://"))
    running.parent.mkdir(parents=True)
    record = {"pid": 4242, "host": "another-host", "started_at": time.time() - 600, "executor": "local"}
    running.write_text(json.dumps({**record, "heartbeat_at": time.time()}))
    status = json.loads(run_cli("status", "contract", "-o", "json", storage=storage).stdout)
    assert status[0]["state"] == "running"
    spec_file = tmp_path / "contract.yaml"
    spec_file.write_text(SPEC)
    again = run_cli("apply", "--local", str(spec_file), storage=storage)
    assert again.returncode == 2 and "is being applied by process 4242" in again.stderr, again.stderr
    running.write_text(json.dumps({**record, "heartbeat_at": time.time() - 2 * STALE_S}))
    status = json.loads(run_cli("status", "contract", "-o", "json", storage=storage).stdout)
    assert status[0]["state"] == "interrupted"


def test_a_running_stage_writes_its_heartbeat_while_its_parts_run(storage, monkeypatch):
    from secoctl.backends.local import executor as local
    from secoctl.tree import StageRun

    monkeypatch.setattr(local, "HEARTBEAT_S", 0.3)
    monkeypatch.setenv("FAKE_SLEEP_S", "0.3")
    beat, beats = StageRun.beat, []

    def counted(run: StageRun) -> None:
        beat(run)
        beats.append(store.read_json(run.tree.running))

    monkeypatch.setattr(StageRun, "beat", counted)
    executor(storage).apply(experiment())
    collect = [record for record in beats if record.get("pid") == os.getpid()]
    assert len(collect) >= 2 and collect[-1]["heartbeat_at"] > collect[0]["heartbeat_at"]
