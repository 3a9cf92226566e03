"""What reading one location comes to, shared by the readers (STAC, the SeCo archive) and the stage."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.common.shards import Sample


class StopPart(RuntimeError):
    """A failure every location would share (the token service is unreachable): the part stops, not the location."""


@dataclass(frozen=True)
class Outcome:
    index: int
    status: str  # accepted | dropped_overlap | dropped_no_scene | failed
    sample: Sample | None = None
    error: str | None = None
