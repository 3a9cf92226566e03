"""Process hygiene shared by the executor and the stage processes."""

import contextlib
import fcntl
import hashlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from secoctl.cache import cache_root

# Set by the embedded executor in each stage process's environment (inherited by torchrun's workers).
EXECUTOR_PID = "SECOCTL_EXECUTOR_PID"


def die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, even by SIGKILL, so no stage process is orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def parent_of(pid: int) -> int | None:
    """The parent PID from /proc/<pid>/stat (field 4, counted from the last ')'); None when unknown."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def ancestors(pid: int) -> list[int]:
    found: list[int] = []
    while (pid := parent_of(pid)) not in (None, 0) and pid not in found:
        found.append(pid)
    return found


def guard_stage_process() -> None:
    """Tie a stage process to its executor before it imports anything heavy (torch takes seconds).

    The parent-death signal covers a parent that dies from now on; one that died before it was set (the
    executor SIGKILLed while this process started) left it re-parented, so the executor recorded at
    spawn must still be an ancestor, or this process exits at once rather than train as an orphan.
    """
    executor = os.environ.get(EXECUTOR_PID)
    if executor is None and "TORCHELASTIC_RUN_ID" not in os.environ:
        return  # a pod, a test or a person's shell: nothing to die with
    die_with_parent()  # torchrun also starts workers in sessions of their own: tie each to its agent's life
    if executor is not None and int(executor) not in ancestors(os.getpid()):
        raise SystemExit(
            f"secoctl: the executor that started this stage process (process {executor}) is gone; "
            "exiting rather than running on alone"
        )


def lock_folder() -> Path:
    return cache_root("locks")


@contextlib.contextmanager
def sole(key: str, busy: str, refused: Callable[[str], BaseException] = SystemExit) -> Iterator[None]:
    """Hold this machine's lock on `key` for the block, or raise `refused(busy)` if another process holds it.

    The kernel drops the lock with the process, so a killed holder never leaves it taken.
    """
    folder = lock_folder()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refused(busy) from None
        yield


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the embedded executor as Ctrl-C does: its stage processes are stopped, its marker removed.

    `secoctl delete` sends SIGTERM, not SIGINT: a process started in the background by a
    non-interactive shell (`secoctl apply ... &` in a script, CI) inherits SIGINT ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
