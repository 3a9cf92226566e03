"""One collect worker: its slice of candidate locations, in order, into committed shards.

The slice is cut into chunks of `samplesPerShard` candidates. A chunk is done when its record
(`chunks/<worker>-<chunk>.json`) exists; the record is written after the chunk's shard, so a
killed worker loses at most the chunks in flight, and a re-run rewrites exactly those, with the
same content. Locations are read up to `inFlight` at a time across chunk boundaries, so the
pipeline never drains at the end of a shard, and memory holds at most one chunk plus what is in
flight; fewer while the API throttles (jobs.collect.pacing).
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from jobs.collect import sampling
from jobs.collect.archive import archive_fetcher, location_folders
from jobs.collect.outcomes import Outcome, StopPart
from jobs.collect.pacing import AdaptiveLimit, throttling_error, watching_gdal
from jobs.collect.pixels import read_patch
from jobs.collect.scenes import find_scenes, open_catalog
from jobs.collect.signing import Signer, redact, signed_read
from jobs.common.part import Part
from jobs.common.shards import Sample, write_shard
from secoctl import store
from secoctl.spec import Collect

ATTEMPTS = 4  # reads of one location before it counts as failed
MAX_LISTED_FAILURES = 100


@dataclass
class Chunk:
    number: int
    candidates: range
    outcomes: list[Outcome] = field(default_factory=list)


def chunks_of(candidates: range, size: int) -> list[Chunk]:
    return [
        Chunk(number, candidates[start : start + size]) for number, start in enumerate(range(0, len(candidates), size))
    ]


def chunk_uri(part: Part, chunk: Chunk, kind: str) -> str:
    return part.tree.path(kind, f"{part.index:05d}-{chunk.number:05d}.{'tar' if kind == 'shards' else 'json'}")


def with_retries(fetch: Callable[[int], Outcome], index: int, limit: AdaptiveLimit, backoff_s: float = 0.5) -> Outcome:
    """Transient faults (cut connections, throttling beyond GDAL's own retries) get a few more tries."""
    for attempt in range(ATTEMPTS):
        try:
            with limit.slot():
                return fetch(index)
        except StopPart:
            raise
        except Exception as error:  # noqa: BLE001 - every failure of one location is counted, not fatal
            if throttling_error(error):
                limit.throttled()
            if attempt == ATTEMPTS - 1:
                detail = "".join(traceback.format_exception_only(error)).strip().splitlines()[-1]
                return Outcome(index, "failed", error=redact(detail)[:500])
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def ordered_outcomes(fetch: Callable[[int], Outcome], indices: list[int], limit: AdaptiveLimit) -> Iterator[Outcome]:
    """Outcomes in candidate order; at most `limit.ceiling` locations are queued, `limit` of them read at once."""
    with ThreadPoolExecutor(max_workers=limit.ceiling, thread_name_prefix="location") as pool:
        pending: deque[Future[Outcome]] = deque()
        upcoming = iter(indices)
        for index in upcoming:
            pending.append(pool.submit(with_retries, fetch, index, limit))
            if len(pending) >= limit.ceiling:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def commit_chunk(part: Part, chunk: Chunk) -> dict[str, Any]:
    samples = [o.sample for o in chunk.outcomes if o.status == "accepted"]
    shard = write_shard(chunk_uri(part, chunk, "shards"), samples) if samples else None
    counts = Counter(o.status for o in chunk.outcomes)
    record = {
        "chunk": chunk.number,
        "candidates": [chunk.candidates.start, chunk.candidates.stop],
        "shard": shard,
        "counts": dict(counts),
        "failures": [{"location": o.index, "error": o.error} for o in chunk.outcomes if o.status == "failed"],
    }
    store.write_json(chunk_uri(part, chunk, "chunks"), record)
    return record


def read_record(uri: str) -> dict[str, Any] | None:
    return store.read_json(uri) if store.exists(uri) else None


def collect_slice(
    part: Part,
    fetch: Callable[[int], Outcome],
    candidates: range,
    collect: Collect,
    patches_per_location: int,
    limit: AdaptiveLimit,
) -> dict[str, Any]:
    chunks = chunks_of(candidates, collect.samples_per_shard)
    records = {chunk.number: read_record(chunk_uri(part, chunk, "chunks")) for chunk in chunks}
    todo = [chunk for chunk in chunks if records[chunk.number] is None]
    totals: Counter[str] = Counter()
    for record in records.values():
        if record:
            totals.update(record["counts"])
    owner = {index: chunk for chunk in todo for index in chunk.candidates}
    started, fresh = time.monotonic(), 0

    def report(force: bool = False) -> None:
        elapsed = max(time.monotonic() - started, 1e-9)
        part.progress(
            sum(totals.values()),
            len(candidates),
            "locations",
            force=force,
            accepted=totals["accepted"],
            dropped=totals["dropped_overlap"] + totals["dropped_no_scene"],
            failed=totals["failed"],
            patches_per_s=round(fresh * patches_per_location / elapsed, 2),
            in_flight=limit.allowed(),
            counts=("accepted", "dropped", "failed"),
            rates=("patches_per_s",),
        )

    report(force=True)
    for outcome in ordered_outcomes(fetch, [i for chunk in todo for i in chunk.candidates], limit):
        chunk = owner[outcome.index]
        chunk.outcomes.append(outcome)
        totals[outcome.status] += 1
        fresh += outcome.status == "accepted"
        if len(chunk.outcomes) == len(chunk.candidates):
            records[chunk.number] = commit_chunk(part, chunk)
            chunk.outcomes = []
        report()
    report(force=True)
    failures = [f for number in sorted(records) for f in records[number]["failures"]]
    return {
        "shards": [records[n]["shard"] for n in sorted(records) if records[n]["shard"]],
        "locations": {
            "candidates": len(candidates),
            "accepted": totals["accepted"],
            "dropped_overlap": totals["dropped_overlap"],
            "dropped_no_scene": totals["dropped_no_scene"],
            "failed": totals["failed"],
        },
        "failures": failures[:MAX_LISTED_FAILURES],
        "pacing": limit.summary(),
    }


def request_threads(collect: Collect) -> int:
    """Threads of each request pool (STAC searches, COG reads): every date of every location in flight at once.

    Both are waits on the network, not CPU, so far more threads than cores; fewer run while the
    API throttles, as fewer locations are in flight then.
    """
    return collect.in_flight * collect.timestamps


@contextlib.contextmanager
def stac_fetcher(collect: Collect, stop: int, limit: AdaptiveLimit) -> Iterator[Callable[[int], Outcome]]:
    """A location reader whose search and read pools, sized by `request_threads`, live as long as the part reads."""
    kept = sampling.kept_candidates(collect, stop)
    catalog = open_catalog(collect, limit)
    signer = Signer.from_settings() if collect.source == "planetary-computer" else None
    threads = request_threads(collect)
    with (
        ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stac-search") as searches,
        ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cog-read") as reads,
    ):

        def fetch(index: int) -> Outcome:
            if not kept[index]:
                return Outcome(index, "dropped_overlap")
            location = sampling.candidate(collect, index)
            half_lon, half_lat = sampling.patch_half_extent_degrees(collect, location.lat)
            items = find_scenes(catalog, collect, location, half_lon, half_lat, searches)
            if items is None:
                return Outcome(index, "dropped_no_scene")
            if signer:
                pixels, metadata = signed_read(
                    signer, items, list(collect.bands), lambda signed: read_patch(signed, location, collect, reads)
                )
            else:
                pixels, metadata = read_patch(items, location, collect, reads)
            return Outcome(index, "accepted", Sample(location.key, pixels, metadata))

        yield fetch


def work(part: Part) -> dict[str, Any]:
    collect = part.experiment.spec.collect
    limit = AdaptiveLimit(collect.in_flight)
    if collect.source == "seco-archive":
        folders = location_folders(collect.archive_path)
        candidates = sampling.worker_slice(len(folders), part.parts, part.index)
        fetcher = contextlib.nullcontext(archive_fetcher(collect, folders))
    else:
        candidates = sampling.worker_slice(collect.locations, part.parts, part.index)
        fetcher = stac_fetcher(collect, candidates.stop, limit)
    with fetcher as fetch, watching_gdal(limit):
        return collect_slice(part, fetch, candidates, collect, collect.timestamps, limit)
