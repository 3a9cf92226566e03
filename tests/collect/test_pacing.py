"""A worker slows down while the API throttles and speeds up again; bursts of 429 cost no location."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from jobs.collect.pacing import DECREASE_COOLDOWN_S, AdaptiveLimit, throttling_error
from jobs.common.shards import read_shard, shard_entries
from jobs.localcloud.cloud import serve
from jobs.localcloud.servers import fault_report
from tests.collect.conftest import expected_outcomes, experiment_for, run_collect


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def read_one(limit: AdaptiveLimit) -> None:
    with limit.slot():
        pass


def test_one_burst_halves_the_limit_once_and_reads_without_throttling_win_it_back():
    clock = Clock()
    limit = AdaptiveLimit(16, clock=clock)
    for _ in range(20):  # twenty refusals of one burst
        limit.throttled()
    assert limit.allowed() == 8
    clock.now += DECREASE_COOLDOWN_S
    limit.throttled()
    assert limit.allowed() == 4
    for _ in range(4 + 5 + 6):  # about one round of locations per step up
        read_one(limit)
    assert limit.allowed() == 6
    for _ in range(500):
        read_one(limit)
    assert limit.allowed() == 16  # never above the spec's inFlight
    assert limit.summary() == {"throttled": 21, "lowest_in_flight": 4, "in_flight": 16}


def test_the_limit_never_drops_below_one_location():
    clock = Clock()
    limit = AdaptiveLimit(2, clock=clock)
    for _ in range(5):
        clock.now += DECREASE_COOLDOWN_S
        limit.throttled()
    assert limit.allowed() == 1


def test_no_location_starts_before_the_retry_after_is_over():
    limit = AdaptiveLimit(4)
    limit.throttled(retry_after_s=0.3)
    asked = time.monotonic()
    started: list[float] = []

    def start() -> None:
        with limit.slot():
            started.append(time.monotonic())

    reader = threading.Thread(target=start)
    reader.start()
    reader.join(timeout=30)
    assert started and started[0] >= asked + 0.3 - 0.01


def test_gdal_and_urllib3_failures_tell_throttling_from_other_errors():
    assert throttling_error(RuntimeError("Error reading Window(...): RasterioIOError('HTTP response code: 429')"))
    assert throttling_error(OSError("HTTP error code: 503 - http://x/B04.tif"))
    assert not throttling_error(RuntimeError("HTTP response code: 403"))
    assert not throttling_error(RuntimeError("TIFFReadEncodedTile() failed"))


BURSTS = [  # every request refused for a while, twice in the run, on both APIs
    {"path": r"\.tif", "action": "status", "status": 429, "retry_after": 1, "after": 40, "times": 30},
    {"path": r"\.tif", "action": "status", "status": 503, "retry_after": 1, "after": 200, "times": 30},
    {"path": r"^/search", "action": "status", "status": 429, "retry_after": 1, "after": 8, "times": 8},
]


def test_bursts_of_429_slow_the_worker_and_every_good_location_lands_once(world_folder: Path, storage: Path):
    stac_rules, cog_rules = BURSTS[2:], BURSTS[:2]
    with serve(world_folder, latency_ms=20, stac_faults=stac_rules, cog_faults=cog_rules) as cloud:
        experiment = experiment_for(cloud.stac_url, workers=1, in_flight=4)
        index = run_collect(experiment, storage)
        fired = [*fault_report(cloud.cog_proxy)["rules"], *fault_report(cloud.stac_proxy)["rules"]]
    assert [rule["fired"] for rule in fired] == [rule["times"] for rule in [*cog_rules, *stac_rules]]

    expected = expected_outcomes(experiment.spec.collect)
    keys = [int(sample.key) for entry in shard_entries(index) for sample in read_shard(entry["uri"])]
    assert sorted(keys) == sorted(expected["accepted"])  # each once
    (part,) = index["parts"]
    assert [f["location"] for f in part["summary"]["failures"]] == sorted(expected["failed"])
    pacing = part["summary"]["pacing"]
    assert pacing["throttled"] > 0 and pacing["lowest_in_flight"] < 4
