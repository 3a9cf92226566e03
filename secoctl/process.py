"""Process hygiene shared by the executor and the stage processes."""

import signal


def die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, even by SIGKILL, so no stage process is orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
