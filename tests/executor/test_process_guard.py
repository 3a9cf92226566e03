"""A stage process never outlives its executor, and no two processes run one part (a forged `_RUNNING`
record is tests/executor/test_local_executor.py's)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from secoctl.tree import spec_uri
from tests.conftest import ROOT
from tests.executor.fake_stage_argv import FAKE_STAGE
from tests.executor.test_local_executor import executor, experiment

GONE_WITHIN_S = 30  # bounds a wait for what must happen, never a measured duration


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + GONE_WITHIN_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_stage_process_whose_executor_died_before_it_started_exits_before_its_imports():
    exited = subprocess.Popen(["true"])  # an executor that has exited, so no ancestor of the part
    exited.wait()
    executor_pid = exited.pid
    result = subprocess.run(
        [sys.executable, "-c", "import jobs.common.part; print('running')"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), SECOCTL_EXECUTOR_PID=str(executor_pid)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "running" not in result.stdout
    assert f"the executor that started this stage process (process {executor_pid}) is gone" in result.stderr


def test_a_stage_process_dies_with_its_executor_even_by_sigkill():
    # The executor stand-in starts a stage process that imports jobs, then waits to be killed.
    executor_code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import jobs, time; print(\"ready\", flush=True); "
        "time.sleep(120)'], env=dict(os.environ, SECOCTL_EXECUTOR_PID=str(os.getpid())))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    stand_in = subprocess.Popen(
        [sys.executable, "-c", executor_code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    child = int(stand_in.stdout.readline())
    try:
        assert stand_in.stdout.readline().strip() == "ready"
        stand_in.send_signal(signal.SIGKILL)
        stand_in.wait()
        wait_until(lambda: gone(child), "the stage process outlived its SIGKILLed executor")
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)


def test_a_second_process_for_a_running_part_refuses(storage):
    prepared = executor(storage).prepare(experiment())
    spec = spec_uri(executor(storage).location(prepared))
    env = dict(os.environ, PYTHONPATH=str(ROOT), JOB_COMPLETION_INDEX="0", SECOCTL_PARTS="1")
    argv = [sys.executable, str(FAKE_STAGE), "pretrain", "", "--spec", spec]  # reads nothing: the lock is the point
    first = subprocess.Popen(argv, cwd=ROOT, env=dict(env, FAKE_SLEEP_S="30"), stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(first.stdout.readline())["event"] == "progress"  # inside its work: the part is held
        second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0, second.stdout
        assert "part 0 of stage pretrain of contract is already running in another process" in second.stderr
        assert not (storage / "experiments" / "contract" / "pretrain" / "ledger").exists()
    finally:
        first.kill()
        first.wait()


def test_ctrl_c_during_pretrain_waits_for_its_checkpoint_however_long_it_takes(storage, tmp_path):
    """The stop budget of other stages (STOP_GRACE_S, 0.5 s here) does not cut a checkpoint short: a pretrain part
    that takes 3 s to checkpoint after SIGTERM is waited for, so the re-run resumes where it stopped."""
    from tests.executor.test_local_executor import SPEC

    spec_file, stopped = tmp_path / "contract.yaml", tmp_path / "stopped"
    spec_file.write_text(SPEC)
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        FAKE_SLEEP_S="0.5",
        FAKE_STOP_S="3",
        TEST_STOP_GRACE_S="0.5",
        FAKE_STOPPED_FILE=str(stopped),
    )
    apply = subprocess.Popen(
        [sys.executable, "-m", "tests.executor.run_apply", storage.as_uri(), str(spec_file)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress = storage / "experiments" / "contract" / "pretrain" / "progress"
    wait_until(lambda: progress.exists() and any(progress.iterdir()), "pretrain started")
    apply.send_signal(signal.SIGINT)  # a terminal's Ctrl-C: stage processes run in sessions of their own
    apply.wait(timeout=GONE_WITHIN_S)
    assert stopped.read_text() == "pretrain 0\n", "the pretrain part was killed before its checkpoint"


def test_delete_purge_of_a_running_pretrain_removes_its_tree_only_after_the_run_stopped(storage, tmp_path):
    """A stopping pretrain writes its checkpoint after SIGTERM; a purge that removed the tree first would see it
    written again, and the next apply resume from it on new data."""
    from tests.conftest import run_cli
    from tests.executor.test_local_executor import SPEC

    spec_file = tmp_path / "contract.yaml"
    spec_file.write_text(SPEC)
    tree = storage / "experiments" / "contract"
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        FAKE_SLEEP_S="0.5",
        FAKE_STOP_S="2",
        FAKE_STOPPED_FILE=str(tree / "pretrain" / "checkpoints" / "written-on-stop"),
    )
    apply = subprocess.Popen(
        [sys.executable, "-m", "tests.executor.run_apply", storage.as_uri(), str(spec_file)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        progress = tree / "pretrain" / "progress"
        wait_until(lambda: progress.exists() and any(progress.iterdir()), "pretrain started")
        deleted = run_cli("delete", "contract", "--purge", storage=storage)
        assert deleted.returncode == 0 and "removed" in deleted.stdout, deleted.stderr
        apply.wait(timeout=GONE_WITHIN_S)
        assert not tree.exists(), "the stopping run wrote into the tree after the purge removed it"
    finally:
        apply.kill()
        apply.wait()
