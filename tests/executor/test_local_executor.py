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

from secoctl import plan
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
        ("collect", "complete"), ("shards", "complete"), ("pretrain", "failed"), ("evaluate", "waiting"),
        ("publish", "waiting")]
    monkeypatch.delenv("FAKE_FAIL_STAGE")
    executor(storage).apply(experiment())
    assert ledger(storage, "collect") == [0, 1, 2, 3] and ledger(storage, "publish") == [0]


def test_a_killed_executor_leaves_a_consistent_tree_and_the_next_apply_resumes(storage, tmp_path):
    spec_file = tmp_path / "contract.yaml"
    spec_file.write_text(SPEC)
    env = dict(os.environ, FAKE_SLEEP_S="0.4", PYTHONPATH=str(ROOT))
    apply = subprocess.Popen([sys.executable, "-m", "tests.executor.run_apply", storage.as_uri(), str(spec_file)],
                             cwd=ROOT, env=env)
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
    logs = run_cli("logs", "contract", "--stage", "collect", "--index", "2", storage=storage)
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


@pytest.mark.parametrize("record", [
    lambda pid: {"pid": pid, "host": socket.gethostname(), "started_at": time.time(), "executor": "local"},
    lambda pid: {**running_record(pid), "pid_started": running_record(pid)["pid_started"] - 1},
    running_record,  # forged: every field /proc shows copied, but the process holds no apply's token
], ids=["without-start-time", "other-start-time", "forged"])
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
    apply = subprocess.Popen([sys.executable, "-m", "tests.executor.run_apply", storage.as_uri(), str(spec_file)],
                             cwd=ROOT, env=env, stderr=subprocess.DEVNULL,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
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
