"""Where a stage part's log lives in storage, and how to read it back whole.

`<stage>/logs/<index>.log` holds a part's log (the embedded executor writes it so; in a pod,
`jobs.common.logged` does); a long run's log is sealed in chunks `<index>.<n>.log` before it, the
live tail staying in `<index>.log`. Names are zero-padded so that listing order is reading order.
"""

from __future__ import annotations

from secoctl import store


def live_uri(stage_uri: str, index: int) -> str:
    return store.join(stage_uri, "logs", f"{index:05d}.log")


def chunk_uri(stage_uri: str, index: int, number: int) -> str:
    return store.join(stage_uri, "logs", f"{index:05d}.{number:05d}.log")


def indexes(stage_uri: str) -> list[int]:
    """The parts that have a log in storage."""
    names = [n for n in store.list_names(store.join(stage_uri, "logs")) if n.endswith(".log")]
    return sorted({int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()})


def files(stage_uri: str, index: int) -> list[str]:
    """The URIs holding part `index`'s log, in reading order: sealed chunks, then the live tail."""
    names = [n for n in store.list_names(store.join(stage_uri, "logs"))
             if n.endswith(".log") and n.split(".")[0] == f"{index:05d}"]
    chunks = sorted(n for n in names if n.count(".") == 2)
    live = [n for n in names if n.count(".") == 1]
    return [store.join(stage_uri, "logs", n) for n in (*chunks, *live)]


def read(stage_uri: str, index: int) -> str:
    return "".join(store.read_text(uri) for uri in files(stage_uri, index))
