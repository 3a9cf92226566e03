"""A stage's TensorBoard event file, written on local disk and kept current in the storage tree.

SummaryWriter appends to a file in a local scratch folder; every UPLOAD_EVERY_S, and on close, the whole
file replaces the stored copy (store.upload_file: a rename on file://, one PUT on s3://), so
`tensorboard --logdir` on the tree always reads a complete file, one that merely ends some records early.
Each process writes a file of its own: a resumed run adds a new one whose purge_step hides the steps the
old file logged after the checkpoint it resumed from.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from secoctl import store

FOLDER = "tensorboard"
UPLOAD_EVERY_S = 30.0  # a long run re-uploads a file that only grows: not on every record


def numeric_fields(record: dict[str, Any]) -> dict[str, float]:
    """Every number of a metrics record but its step, whatever fields the stage adds to it."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


class EventLog:
    def __init__(self, uri: str, purge_step: int | None = None) -> None:
        self.uri = uri
        self._scratch = tempfile.TemporaryDirectory(prefix="tensorboard-")
        self._writer = SummaryWriter(self._scratch.name, purge_step=purge_step)
        self._uploaded_at = 0.0

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, step)
        if time.monotonic() - self._uploaded_at >= UPLOAD_EVERY_S:
            self._upload()

    def _upload(self) -> None:
        self._writer.flush()
        for path in Path(self._scratch.name).iterdir():
            store.upload_file(path, store.join(self.uri, path.name))
        self._uploaded_at = time.monotonic()

    def close(self) -> None:
        self._upload()
        self._writer.close()
        self._scratch.cleanup()
