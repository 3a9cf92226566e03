"""Where a stage stands, in one vocabulary for both executors, and the colour a person sees each in.

The storage tree says complete, changed, failed, running, interrupted, ready or waiting
(`plan.assess`); a cluster's Job also says pending (started, its pods not all running yet) and
queued (handed to Kueue), and waiting for a Job `apply` made that the driver has not started yet.
An experiment whose stored spec cannot be read is one unreadable row in `status`.
"""

from __future__ import annotations

from typing import Literal

State = Literal[
    "complete", "changed", "failed", "running", "interrupted", "pending", "queued", "ready", "waiting", "unreadable"
]

STYLE: dict[State, str] = {
    "complete": "green",
    "running": "cyan",
    "failed": "red",
    "changed": "yellow",
    "interrupted": "yellow",
    "pending": "yellow",
    "queued": "yellow",
    "ready": "white",
    "waiting": "dim",
    "unreadable": "red",
}


def styled(state: State) -> str:
    """The state as rich markup."""
    return f"[{STYLE[state]}]{state}[/{STYLE[state]}]"
