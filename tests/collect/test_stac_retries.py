"""The STAC client waits out a server's Retry-After only so long, reads one it cannot parse as no hint, and
gives up on a refused connection at once. Waits are counted through urllib3's clock, never timed."""

from __future__ import annotations

import time

import pytest
import urllib3.util.retry

from jobs.collect.pacing import MAX_HOLD_S
from jobs.collect.scenes import open_catalog
from jobs.localcloud.cloud import serve
from jobs.localcloud.servers import free_port
from tests.collect.conftest import experiment_for


class CountedSleeps:
    """urllib3's `time` module, whose sleeps are recorded instead of slept."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def time(self) -> float:
        return time.time()


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    counted = CountedSleeps()
    monkeypatch.setattr(urllib3.util.retry, "time", counted)
    return counted.sleeps


# What urllib3 sleeps before the second and third try: the capped hint, or its backoff (0, then 1 s).
WAITS = {
    "99999": [MAX_HOLD_S, MAX_HOLD_S],
    "Wed, 21 Oct 2099 07:28:00 GMT": [MAX_HOLD_S, MAX_HOLD_S],
    "soon": [1.0],
    "-5": [1.0],
    "3": [3, 3],
}


@pytest.mark.parametrize("retry_after", sorted(WAITS))
def test_a_throttled_search_waits_a_bounded_time_whatever_retry_after_says(world_folder, sleeps, retry_after):
    faults = [{"path": "", "action": "status", "status": 503, "retry_after": retry_after, "times": 2}]
    with serve(world_folder, stac_faults=faults) as cloud:
        catalog = open_catalog(experiment_for(cloud.stac_url).spec.collect)
        assert catalog.id  # the third try got through: no APIError from the header
    assert sleeps == WAITS[retry_after]


@pytest.mark.parametrize("where", ["refused", "unresolvable"])
def test_a_refused_or_unresolvable_stac_url_fails_at_once_without_retries(sleeps, where):
    # nothing listens on a free port; .invalid never resolves (RFC 6761)
    url = f"http://127.0.0.1:{free_port()}" if where == "refused" else "http://stac.no-such-host.invalid"
    with pytest.raises(Exception) as error:
        open_catalog(experiment_for(url).spec.collect)
    assert any(word in str(error.value).lower() for word in ("refused", "resolve", "not known"))
    assert sleeps == []
