"""Pretrain keeps its last two checkpoints: a run's storage stays near two checkpoints' size, and resume still
finds the newest, or the one before it when the newest does not load."""

from __future__ import annotations

from pathlib import Path

import torch

from jobs.pretrain import checkpoints
from secoctl import store


def test_each_save_keeps_the_two_newest_and_latest_falls_back_to_the_one_before(tmp_path: Path):
    directory = (tmp_path / "checkpoints").as_uri()
    for step in (5, 10, 15, 20):
        checkpoints.save(directory, step, {"step": step, "model": {"w": torch.full((4,), float(step))}})
    assert checkpoints.list_steps(directory) == [15, 20]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [checkpoints.name(15), checkpoints.name(20)]
    assert checkpoints.latest(directory)["step"] == 20
    store.write_bytes(store.join(directory, checkpoints.name(20)), b"torn")
    assert checkpoints.latest(directory)["step"] == 15
