"""Checkpoints in the storage tree: written whole, found newest-first, loaded without unpickling code."""

from __future__ import annotations

import io
from typing import Any

import torch

from secoctl import store

KEEP = 3


def name(step: int) -> str:
    return f"step-{step:09d}.pt"


def save(directory: str, step: int, state: dict[str, Any]) -> str:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    uri = store.join(directory, name(step))
    store.write_bytes(uri, buffer.getvalue())
    for old in list_steps(directory)[:-KEEP]:
        store.remove(store.join(directory, name(old)))
    return uri


def list_steps(directory: str) -> list[int]:
    return sorted(int(n[5:14]) for n in store.list_names(directory) if n.startswith("step-") and n.endswith(".pt"))


def load(uri: str) -> dict[str, Any]:
    fs, path = store.filesystem(uri)
    with fs.open(path, "rb") as handle:
        return torch.load(io.BytesIO(handle.read()), map_location="cpu", weights_only=True)


def latest(directory: str) -> dict[str, Any] | None:
    """The newest checkpoint that loads; a damaged one is passed over for the one before it."""
    for step in reversed(list_steps(directory)):
        try:
            return load(store.join(directory, name(step)))
        except (RuntimeError, EOFError, OSError):
            continue
    return None
