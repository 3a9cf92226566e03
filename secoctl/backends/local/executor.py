"""The embedded executor: the plan's stages as processes on this machine.

Each part runs the entry point a pod would run, with the pod's completion index in its
environment. The executor owns only the stage-level commit (`index.json`, then `_SUCCESS`);
a Ctrl-C or kill leaves committed parts in place and nothing half-written, so the next
`apply` resumes where this one stopped.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from secoctl import claim, partlog, plan, store
from secoctl.errors import UserError
from secoctl.process import EXECUTOR_PID, die_with_parent, sole, terminate_as_interrupt
from secoctl.spec import Experiment
from secoctl.stored import prepare_storage, read_experiment_facts, stage_tree
from secoctl.tree import StageTree, experiment_uri, read_facts, spec_uri, stage_run

ArgvFor = Callable[[plan.Stage, str], list[str]]
POLL_S = 0.25
STOP_GRACE_S = 10.0
# A running stage's `_RUNNING` is written again every HEARTBEAT_S; one from another host that is fresher than
# STALE_S is a run there, alive, not an interrupted one.
HEARTBEAT_S = 10.0
STALE_S = 60.0
LOG_TAIL_LINES = 20
FAILURE_WINDOW_BYTES = 64 * 1024
TOKEN_PREFIX = "secoctl-run-"
LOGS_PREFIX = "secoctl-logs-"  # then the apply's pid: a killed apply's folder is found by it


def local_gpu_count() -> int:
    """GPUs visible to torchrun, found without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def default_argv(stage: plan.Stage, spec_location: str) -> list[str]:
    return plan.local_argv(stage, spec_location, nproc_per_node=max(local_gpu_count(), 1))


def process_identity(pid: int) -> dict | None:
    """What tells this process from a later one given the same PID: its host, boot and start time.

    The start time is in clock ticks after boot (/proc/<pid>/stat field 22); None when the process is gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    # field 2, the command name, may hold spaces and parentheses: count from the last ')'
    started = int(stat.rsplit(")", 1)[1].split()[19])
    return {"pid": pid, "host": socket.gethostname(), "boot_id": boot_id, "pid_started": started}


def running_record(pid: int) -> dict:
    """The `_RUNNING` content for an apply in process `pid` on this machine."""
    return {
        **(process_identity(pid) or {"pid": pid, "host": socket.gethostname()}),
        "started_at": time.time(),
        "executor": "local",
        "heartbeat_at": time.time(),
    }


class RunToken:
    """What only the apply of one experiment holds: an open file of random content, named for the experiment.

    Its `_RUNNING` records carry the file's path and content hash. Anyone who can write the storage tree can
    copy a record's pid, host, boot id and start time from /proc, but cannot make another process hold this
    file open; so `delete` signals only a process that holds it (seen in /proc/PID/fd, which the kernel
    shows only to that process's own user).
    """

    def __init__(self, experiment: str):
        handle, self.path = tempfile.mkstemp(prefix=f"{TOKEN_PREFIX}{experiment}-")
        self.handle = os.fdopen(handle, "w")
        token = secrets.token_hex(32)
        self.handle.write(token)
        self.handle.flush()
        self.record = {"token_file": self.path, "token_sha256": hashlib.sha256(token.encode()).hexdigest()}

    def close(self) -> None:
        self.handle.close()
        Path(self.path).unlink(missing_ok=True)


def _token_name(experiment: str) -> re.Pattern:
    """The whole name mkstemp gives this experiment's token (its random part has no '-'): a prefix alone would
    take `mini-2`'s token for `mini`'s."""
    return re.compile(re.escape(f"{TOKEN_PREFIX}{experiment}-") + r"[A-Za-z0-9_]+")


def _held_files() -> set[str]:
    """Every file this user's processes hold open (the kernel shows another user's only to that user)."""
    held = set()
    for fd_folder in Path("/proc").glob("[0-9]*/fd"):
        try:
            held.update(os.readlink(fd) for fd in fd_folder.iterdir())
        except OSError:
            continue
    return held


def sweep_leftovers(experiment: str) -> list[Path]:
    """What killed applies left in the temporary folder: this experiment's token files no process holds, and
    part-log folders of applies that are gone. Removed; returned for the record."""
    folder = Path(tempfile.gettempdir())
    held = _held_files()
    removed = [
        path
        for path in folder.glob(f"{TOKEN_PREFIX}{experiment}-*")
        if _token_name(experiment).fullmatch(path.name)
        and str(path) not in held
        and path.is_file()
        and path.stat().st_uid == os.getuid()
    ]
    for path in removed:
        path.unlink(missing_ok=True)
    for logs in folder.glob(f"{LOGS_PREFIX}*"):
        pid = logs.name.removeprefix(LOGS_PREFIX).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and logs.stat().st_uid == os.getuid():
            shutil.rmtree(logs, ignore_errors=True)
            removed.append(logs)
    return removed


def _holds_token(pid: int, record: dict, experiment: str) -> bool:
    path = record.get("token_file")
    if not isinstance(path, str) or not _token_name(experiment).fullmatch(Path(path).name):
        return False
    try:
        held = any(os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in os.listdir(f"/proc/{pid}/fd"))
        content = Path(path).read_bytes() if held else b""
    except OSError:  # another user's process, or one that just exited
        return False
    return held and hashlib.sha256(content).hexdigest() == record.get("token_sha256")


def is_alive_here(record: dict, experiment: str) -> bool:
    """Whether the process a `_RUNNING` record names is this experiment's apply, running on this machine.

    A PID alone is not enough: a killed apply leaves its record behind and the PID may since belong to
    another process (the identity tells them apart), and a forged record names one on purpose (the token).
    """
    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("host") != socket.gethostname():
        return False
    identity = process_identity(pid)
    return (
        identity is not None
        and all(record.get(key) == value for key, value in identity.items())
        and _holds_token(pid, record, experiment)
    )


def alive_local_pids(facts: dict, experiment: str) -> set[int]:
    return {f.running["pid"] for f in facts.values() if f.running and is_alive_here(f.running, experiment)}


def running_elsewhere(facts: dict, now: float | None = None) -> set[int]:
    """The pids of runs on other hosts whose heartbeat is fresh: alive there, though no process here shows it."""
    now = time.time() if now is None else now
    return {
        f.running["pid"]
        for f in facts.values()
        if f.running
        and isinstance(f.running.get("pid"), int)
        and f.running.get("host") != socket.gethostname()
        and isinstance(f.running.get("heartbeat_at"), (int, float))
        and abs(now - f.running["heartbeat_at"]) < STALE_S
    }  # either host's clock may run ahead


def alive_anywhere(facts: dict, experiment: str) -> set[int]:
    return alive_local_pids(facts, experiment) | running_elsewhere(facts)


class StageFailed(Exception):
    """A part that failed: `message` is its own one line when it named the cause (partlog.failure_line)."""

    def __init__(
        self, stage: str, index: int, exit_code: int, log_tail: str, log_location: str, message: str | None = None
    ):
        self.stage, self.index, self.exit_code = stage, index, exit_code
        self.log_tail, self.log_location, self.message = log_tail, log_location, message
        super().__init__(message or f"stage {stage} part {index} exited with code {exit_code}")


@dataclass
class RunningPart:
    index: int
    process: subprocess.Popen
    log_path: Path
    log_uri: str


class Observer:
    """What the executor tells a person; the CLI draws it with rich, tests collect it."""

    def stage_skipped(self, stage: plan.Stage) -> None: ...
    def stage_started(self, stage: plan.Stage, parts_done: int) -> None: ...
    def stage_progress(self, stage: plan.Stage, facts) -> None: ...
    def stage_finished(self, stage: plan.Stage, seconds: float) -> None: ...
    def dataset_wait(self, stage: plan.Stage, claim: dict) -> None: ...


class LocalExecutor:
    def __init__(
        self,
        storage: str,
        argv_for: ArgvFor = default_argv,
        concurrency: int | None = None,
        observer: Observer | None = None,
        stale_s: float = claim.STALE_S,
        heartbeat_s: float = claim.HEARTBEAT_S,
        wait_poll_s: float = claim.WAIT_POLL_S,
    ):
        self.storage = storage
        self.argv_for = argv_for
        self.concurrency = concurrency or max(os.cpu_count() or 1, 1)
        self.observer = observer or Observer()
        self.stale_s, self.heartbeat_s, self.wait_poll_s = stale_s, heartbeat_s, wait_poll_s

    def location(self, experiment: Experiment) -> str:
        return experiment_uri(self.storage, experiment.name)

    def prepare(self, experiment: Experiment) -> Experiment:
        """Store the spec, refusing a change that would contradict work already done."""
        if experiment.spec.storage != self.storage:
            experiment = experiment.with_storage(self.storage)
        prepare_storage(self.location(experiment), experiment, alive=alive_anywhere)
        return experiment

    def apply(self, experiment: Experiment) -> None:
        """One apply of an experiment at a time on this machine: a second one is refused before it touches the
        tree (a lock the kernel drops with its holder), so it can never remove or overwrite the first's markers."""
        busy = (
            f"experiment {experiment.name} is being applied by another process on this machine; wait for it "
            f"or `secoctl delete {experiment.name}` to stop it"
        )
        with sole(f"apply {self.location(experiment)}", busy, refused=UserError):
            sweep_leftovers(experiment.name)
            self._apply(experiment)

    def _apply(self, experiment: Experiment) -> None:
        experiment = self.prepare(experiment)
        facts = read_experiment_facts(self.storage, experiment)
        with terminate_as_interrupt():
            for status in plan.assess(
                experiment, facts, alive=alive_anywhere(facts, experiment.name), single_machine=True
            ):
                if status.state == "complete":
                    self.observer.stage_skipped(status.stage)
                    continue
                self.run_stage(experiment, status.stage)

    def run_stage(self, experiment: Experiment, stage: plan.Stage) -> None:
        """Runs a stage's missing parts; a shared dataset's only under its claim, reused if another completed it."""
        tree = stage_tree(self.storage, experiment.name, stage)
        if plan.dataset_name(stage) is None or tree.at is None:  # its own, or an old tree read in place
            self._run_stage(experiment, stage, tree)
            return
        mine = claim.owner(experiment.name, executor="local")
        with claim.claimed(
            tree,
            stage.fingerprint,
            mine,
            lambda held: self.observer.dataset_wait(stage, held),
            self.stale_s,
            self.heartbeat_s,
            self.wait_poll_s,
        ) as owned:
            if not owned:
                self.observer.stage_skipped(stage)
                return
            self._run_stage(experiment, stage, tree)

    def _run_stage(self, experiment: Experiment, stage: plan.Stage, tree: StageTree) -> None:
        token = RunToken(experiment.name)
        started = time.monotonic()
        try:
            with stage_run(tree, {**running_record(os.getpid()), **token.record}) as run:
                missing = read_facts(tree).missing_parts(stage.parts)
                self.observer.stage_started(stage, stage.parts - len(missing))
                try:
                    self._run_parts(experiment, stage, tree, missing, run.beat)
                    self._check_committed(stage, tree)
                except StageFailed as failure:
                    run.fail(
                        {
                            "reason": failure.message or f"part {failure.index} exited with code {failure.exit_code}",
                            "index": failure.index,
                            "exit_code": failure.exit_code,
                            "log_tail": failure.log_tail,
                        }
                    )
                    raise
                run.commit(stage.fingerprint, stage.parts)
        finally:
            token.close()
        self.observer.stage_finished(stage, time.monotonic() - started)

    def _check_committed(self, stage: plan.Stage, tree: StageTree) -> None:
        missing = read_facts(tree).missing_parts(stage.parts)
        if missing:
            raise StageFailed(
                stage.name,
                missing[0],
                0,
                "the process exited 0 without committing its part",
                partlog.live_uri(tree.uri, missing[0]),
            )

    def _start_part(
        self, experiment: Experiment, stage: plan.Stage, tree: StageTree, index: int, log_dir: Path
    ) -> RunningPart:
        log_uri = partlog.live_uri(tree.uri, index)
        local_log = _local_path(log_uri) or log_dir / f"{index:05d}.log"
        local_log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            JOB_COMPLETION_INDEX=str(index),
            SECOCTL_PARTS=str(stage.parts),
            PYTHONUNBUFFERED="1",
            **{EXECUTOR_PID: str(os.getpid())},
        )
        with open(local_log, "ab") as log:
            process = subprocess.Popen(
                self.argv_for(stage, spec_uri(self.location(experiment))),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        return RunningPart(index, process, local_log, log_uri)

    def _run_parts(
        self,
        experiment: Experiment,
        stage: plan.Stage,
        tree: StageTree,
        pending: Sequence[int],
        beat: Callable[[], None],
    ) -> None:
        queue = list(pending)
        beaten = time.monotonic()
        running: list[RunningPart] = []
        with tempfile.TemporaryDirectory(prefix=f"{LOGS_PREFIX}{os.getpid()}-") as log_dir:
            try:
                while queue or running:
                    while queue and len(running) < self.concurrency:
                        running.append(self._start_part(experiment, stage, tree, queue.pop(0), Path(log_dir)))
                    time.sleep(POLL_S)
                    if time.monotonic() - beaten >= HEARTBEAT_S:
                        beat()
                        beaten = time.monotonic()
                    self.observer.stage_progress(stage, read_facts(tree))
                    for part in [p for p in running if p.process.poll() is not None]:
                        running.remove(part)
                        _upload_log(part)
                        if part.process.returncode != 0:
                            raise StageFailed(
                                stage.name,
                                part.index,
                                part.process.returncode,
                                _tail(part.log_path),
                                part.log_uri,
                                _named_failure(part.log_path),
                            )
            finally:
                _stop(
                    running,
                    checkpoints=stage.record is not None and stage.record.stop_grace_s(experiment.spec) is not None,
                )
                for part in running:
                    _upload_log(part)


def _local_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("file://")) if uri.startswith("file://") else None


def _upload_log(part: RunningPart) -> None:
    if _local_path(part.log_uri) is None:
        store.write_bytes(part.log_uri, part.log_path.read_bytes())


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _named_failure(path: Path, window: int = FAILURE_WINDOW_BYTES) -> str | None:
    """The failure line the part printed, searched in its log's last bytes: torchrun's own report follows it."""
    try:
        with open(path, "rb") as log:
            log.seek(max(log.seek(0, os.SEEK_END) - window, 0))
            return partlog.last_failure(log.read().decode(errors="replace"))
    except OSError:
        return None


def _stop(running: list[RunningPart], checkpoints: bool = False) -> None:
    """Stop parts and their children (torchrun workers, loader processes) as a group.

    A stage that checkpoints when told to stop (its record has a stop budget: pretrain) is waited for however
    long its checkpoint takes, so a re-run redoes no step; a second Ctrl-C (or SIGTERM) kills it at once. Any
    other stage's parts get STOP_GRACE_S.
    """
    for part in running:
        if part.process.poll() is None:
            _signal_group(part.process.pid, signal.SIGTERM)
    deadline = None if checkpoints else time.monotonic() + STOP_GRACE_S
    try:
        for part in running:
            try:
                part.process.wait(timeout=None if deadline is None else max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(part.process.pid, signal.SIGKILL)
                part.process.wait()
    except KeyboardInterrupt:
        for part in running:
            _signal_group(part.process.pid, signal.SIGKILL)
            part.process.wait()
        raise


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
