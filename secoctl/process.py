"""Process hygiene shared by the executor and the stage processes."""

import contextlib
import signal
import threading
from collections.abc import Iterator


def die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, even by SIGKILL, so no stage process is orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


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
