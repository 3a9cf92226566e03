"""Which failures of a part are predictable, and what their one line says: the cause and the spec field to fix.

A part fails predictably when what it was given is wrong, not its code: a STAC API that cannot be
reached or answers errors, storage that cannot be reached or refuses the credentials, a file://
tree whose disk is full, a dataset that
is not at its dataPath, an earlier stage's output that is not there. `classify` is the one place that
knows them; anything else is a bug and keeps its traceback alone. The libraries are looked up in
sys.modules, as `secoctl.store` does, so classifying imports nothing a stage did not load.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from secoctl.store import endpoint, one_line


class PartFailure(Exception):
    """A failure a stage names itself where it finds it (an earlier stage's output missing)."""

    def __init__(self, cause: str, field: str | None):
        super().__init__(cause)
        self.cause, self.field = cause, field


@dataclass(frozen=True)
class Where:
    """What the part was working on, for the line: its stage, its index, its storage and STAC API."""

    stage: str
    index: int
    storage: str
    stac_url: str | None = None


def chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every error it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _is(error: BaseException, module: str, *names: str) -> bool:
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(error, tuple(getattr(loaded, name) for name in names))


def _connection_problem(errors: list[BaseException]) -> str | None:
    """Why a server could not be talked to, in a few words, from the lowest error that says."""
    for error in reversed(errors):
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, TimeoutError) or _is(error, "requests.exceptions", "Timeout"):
            return "no answer in time"
        if _is(error, "socket", "gaierror"):
            return f"name not resolved: {one_line(error)}"
    return None


def _stac(errors: list[BaseException], where: Where) -> PartFailure | None:
    if not any(_is(e, "pystac_client.exceptions", "APIError") for e in errors):
        return None
    url, field = where.stac_url, "spec.collect.stacUrl"
    for error in errors:
        reason = getattr(error, "reason", None)  # urllib3's MaxRetryError: why the retries ran out
        if _is(reason, "urllib3.exceptions", "ResponseError"):
            return PartFailure(f"STAC API {url} kept answering errors ({one_line(reason)})", field)
        status = getattr(error, "status_code", None)
        if isinstance(status, int):
            return PartFailure(f"STAC API {url} answered HTTP {status}", field)
    problem = _connection_problem(errors)
    if problem or any(_is(e, "requests.exceptions", "ConnectionError") for e in errors):
        return PartFailure(f"STAC API {url} not reachable ({problem or 'connection failed'})", field)
    return None


def _storage(errors: list[BaseException], where: Where) -> PartFailure | None:
    storage = where.storage
    if any(_is(e, "botocore.exceptions", "EndpointConnectionError", "ConnectTimeoutError") for e in errors):
        problem = _connection_problem(errors) or "connection failed"
        return PartFailure(
            f"storage {storage} not reachable at {endpoint()} ({problem})", "spec.storageSecret (its endpoint)"
        )
    full = next((e for e in errors if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)), None)
    if (
        full is not None
        and storage.startswith("file://")
        and str(full.filename or "").startswith(storage.removeprefix("file://").rstrip("/") + "/")
    ):
        return PartFailure(
            f"storage {storage} is full: no space left on its disk for {full.filename}",
            "spec.storage (free space on its disk, or choose another tree)",
        )
    outer = errors[0]
    if isinstance(outer, PermissionError) and any(_is(e, "botocore.exceptions", "ClientError") for e in errors):
        return PartFailure(f"storage {storage} refused the credentials ({one_line(outer)})", "spec.storageSecret")
    return None


def _dataset(errors: list[BaseException], where: Where) -> PartFailure | None:
    if where.stage == "evaluate" and _is(errors[0], "jobs.evaluate.datasets", "DatasetError"):
        return PartFailure(one_line(errors[0], limit=600), f"spec.evaluate[{where.index}].dataPath")
    if _is(errors[0], "jobs.common.training_shards", "DamagedShard"):  # its message names the file
        return PartFailure(one_line(errors[0], limit=600), None)
    return None


def classify(error: BaseException, where: Where) -> PartFailure | None:
    """The predictable failure `error` is, or None for a bug."""
    errors = list(chain(error))
    if isinstance(error, PartFailure):
        return error
    if _is(error, "jobs.collect.outcomes", "StopPart"):  # its message names the fix (the token service)
        return PartFailure(one_line(error, limit=600), None)
    for kind in (_stac, _storage, _dataset):
        failure = kind(errors, where)
        if failure:
            return failure
    return None
