"""Who runs a shared dataset: the one that creates its `_CLAIM` object; the others wait, then read it.

The claim is as wide as what is shared, the storage: creating an object only if absent (store.create_exclusive:
O_EXCL-style on a file system, `If-None-Match: *` on S3) lets exactly one of any number of executors win, on one
machine, in one namespace or in several pointing at one bucket. The claim names its owner (experiment, host,
process or Job) and carries a heartbeat its owner rewrites every HEARTBEAT_S while the parts run.

A waiter takes over a claim that looks dead: one whose content has not changed for STALE_S as the waiter's own
clock measures it (no comparison of two machines' clocks), or at once one on this host whose process is gone.
Of several waiters only the one that creates `_TAKEOVER-<claim id>` rewrites the claim; the new owner runs the
stage again, and its parts that committed before (`parts/NNNNN.json`) skip themselves. A dataset whose
`_SUCCESS` carries the fingerprint asked for is reused without a claim. The owner removes the claim after the
stage's commit or failure, so a waiter then either finds it complete or claims it and runs it itself.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from secoctl import store
from secoctl.tree import StageTree

HEARTBEAT_S = 10.0
STALE_S = 60.0  # six missed heartbeats: a pause of the owner's process or its store that long is taken as its end
WAIT_POLL_S = 1.0
TAKEOVER = "_TAKEOVER-"


def owner(experiment: str, **where: Any) -> dict[str, Any]:
    """A new claim's record: its own id, the experiment, this host and process, and `where` (a Job, namespace)."""
    import socket
    import uuid

    now = time.time()
    return {
        "id": uuid.uuid4().hex,
        "experiment": experiment,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_started": _started(os.getpid()),
        **where,
        "claimed_at": now,
        "heartbeat_at": now,
    }


def holder_if_live(claim: dict[str, Any] | None, now: float, stale_s: float = STALE_S) -> dict[str, Any] | None:
    """The claim as `status` judges it from one look: live while its heartbeat is younger than `stale_s`."""
    if not claim or not isinstance(claim.get("heartbeat_at"), (int, float)):
        return None
    return claim if now - claim["heartbeat_at"] < stale_s else None


def _started(pid: int) -> int | None:
    """A process's start time in clock ticks after boot (/proc/<pid>/stat field 22), None when it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _gone_here(claim: dict[str, Any]) -> bool:
    """Whether the claim's owner was a process on this host that no longer runs (its PID gone or reused)."""
    import socket

    pid = claim.get("pid")
    if claim.get("host") != socket.gethostname() or not isinstance(pid, int) or claim.get("pid_started") is None:
        return False
    return _started(pid) != claim["pid_started"]


def _complete(tree: StageTree, fingerprint: str) -> bool:
    success = store.read_json_or_none(tree.success)
    return isinstance(success, dict) and success.get("fingerprint") == fingerprint


def acquire(
    tree: StageTree,
    fingerprint: str,
    mine: dict[str, Any],
    on_wait: Callable[[dict[str, Any]], None],
    stale_s: float = STALE_S,
    poll_s: float = WAIT_POLL_S,
) -> bool:
    """True once `mine` owns the claim (the caller runs the stage); False when the dataset is complete (reuse it).

    `on_wait(claim)` is called each time another owner is seen holding it; a heartbeat is not a new owner."""
    data = json.dumps(mine, sort_keys=True).encode()
    seen, since = None, time.monotonic()
    while True:
        if _complete(tree, fingerprint):
            return False
        if store.create_exclusive(tree.claim, data):
            break
        held = store.read_json_or_none(tree.claim)
        if not isinstance(held, dict):  # released between the create and the read, or not yet readable
            time.sleep(min(poll_s, 0.1))
            continue
        if held != seen:
            if seen is None or held.get("id") != seen.get("id"):
                on_wait(held)
            seen, since = held, time.monotonic()
        elif (time.monotonic() - since >= stale_s or _gone_here(held)) and store.create_exclusive(
            store.join(tree.uri, f"{TAKEOVER}{held.get('id')}"), data
        ):
            store.write_bytes(tree.claim, data)
            break
        time.sleep(poll_s)
    if _complete(tree, fingerprint):  # completed by the owner that released just before this claim
        release(tree, mine)
        return False
    return True


def release(tree: StageTree, mine: dict[str, Any]) -> None:
    """Remove the claim if it is still `mine`, and the takeover markers of the claims it replaced."""
    held = store.read_json_or_none(tree.claim)
    for name in store.list_names(tree.uri):
        if name.startswith(TAKEOVER):
            store.remove(tree.path(name))
    if isinstance(held, dict) and held.get("id") == mine["id"]:
        store.remove(tree.claim)


class Heartbeat:
    """Rewrites the claim's `heartbeat_at` every `every_s` while the owner works; stops if another took it over."""

    def __init__(self, tree: StageTree, mine: dict[str, Any], every_s: float = HEARTBEAT_S):
        import threading  # here, not at the top: `status` reads claims (plan.assess) and starts no thread

        self.tree, self.mine, self.every_s = tree, mine, every_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim-{tree.stage}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                held = store.read_json_or_none(self.tree.claim)
                if not isinstance(held, dict) or held.get("id") != self.mine["id"]:
                    self.lost = True
                    return
                store.write_json(self.tree.claim, {**self.mine, "heartbeat_at": time.time()})
            except Exception:  # noqa: BLE001 - a store that fails one beat is tried again at the next
                continue


@contextmanager
def claimed(
    tree: StageTree,
    fingerprint: str,
    mine: dict[str, Any],
    on_wait: Callable[[dict[str, Any]], None] = lambda claim: None,
    stale_s: float = STALE_S,
    heartbeat_s: float = HEARTBEAT_S,
    poll_s: float = WAIT_POLL_S,
) -> Iterator[bool]:
    """Yields True while `mine` owns the dataset's claim (run the stage, then the claim goes), or False when
    the dataset is complete and is to be reused."""
    if not acquire(tree, fingerprint, mine, on_wait, stale_s, poll_s):
        yield False
        return
    try:
        with Heartbeat(tree, mine, heartbeat_s):
            yield True
    finally:
        release(tree, mine)
