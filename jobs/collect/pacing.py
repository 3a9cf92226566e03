"""How many locations one worker reads at once: fewer while the API throttles, more once it stops.

32 workers each keeping a fixed number of locations in flight go on hammering an API that answers
429, 503 or 504 (PlanetaryComputer#427). Each worker paces itself like TCP's AIMD: a throttling
answer halves its limit (once per cooldown, however many requests of one burst were refused) and
holds new locations back for the Retry-After the server asked for; every location read without
one adds 1/limit, so the limit climbs back by about one per round of locations.

The signals come from the STAC searches (urllib3's retries, which also wait out Retry-After) and
from GDAL, whose retries of COG reads are only visible as its warnings; GDAL 3.10 ignores
Retry-After, so new locations are held back for GDAL_HTTP_RETRY_DELAY instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator

from urllib3.exceptions import InvalidHeader, MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

THROTTLING = frozenset({429, 503, 504})
DECREASE_COOLDOWN_S = 1.0  # one burst of refusals halves the limit once
MAX_HOLD_S = 60.0  # the longest Retry-After honoured before starting new locations
GDAL_RETRY = re.compile(r"HTTP error code: (\d{3})\b.*Retrying again in ([\d.]+) secs")


class AdaptiveLimit:
    """Slots for locations in flight; `limit` moves between 1 and `ceiling` (the spec's inFlight)."""

    def __init__(self, ceiling: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.lowest = ceiling
        self.signals = 0
        self.active = 0
        self.hold_until = -math.inf
        self.last_decrease = -math.inf
        self.clock = clock
        self.condition = threading.Condition()

    def allowed(self) -> int:
        return max(1, int(self.limit))

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Held while one location is read; a location that raises does not count as read."""
        with self.condition:
            while True:
                hold = self.hold_until - self.clock()
                if hold <= 0 and self.active < self.allowed():
                    break
                self.condition.wait(timeout=hold if hold > 0 else None)
            self.active += 1
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            with self.condition:
                self.active -= 1
                if succeeded:
                    self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
                self.condition.notify_all()

    def throttled(self, retry_after_s: float | None = None) -> None:
        """The server refused a request for load: halve the limit, hold new locations for `retry_after_s`."""
        with self.condition:
            now = self.clock()
            self.signals += 1
            if retry_after_s:
                self.hold_until = max(self.hold_until, now + min(retry_after_s, MAX_HOLD_S))
            if now - self.last_decrease >= DECREASE_COOLDOWN_S:
                self.limit = max(1.0, self.limit / 2)
                self.lowest = min(self.lowest, self.allowed())
                self.last_decrease = now
            self.condition.notify_all()

    def summary(self) -> dict[str, int]:
        with self.condition:
            return {"throttled": self.signals, "lowest_in_flight": self.lowest, "in_flight": self.allowed()}


def throttling_error(error: BaseException) -> bool:
    """Whether a failed read ended in a throttling answer (after GDAL's own retries)."""
    return re.search(r"HTTP (?:response |error )?code:? (429|503|504)\b", str(error)) is not None


class ReportingRetry(Retry):
    """urllib3's Retry that also tells the limit about each throttling answer it retries."""

    def __init__(self, *args, on_throttle: Callable[[float | None], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_throttle = on_throttle

    def new(self, **kwargs) -> ReportingRetry:
        return super().new(on_throttle=self.on_throttle, **kwargs)  # type: ignore[return-value]

    def get_retry_after(self, response) -> float | None:
        """Retry-After in seconds, at most MAX_HOLD_S (urllib3 waits up to six hours); None for a value that
        is neither seconds nor an HTTP date, which then gets the backoff instead of ending the request."""
        try:
            seconds = super().get_retry_after(response)
        except InvalidHeader:
            return None
        return None if seconds is None else min(seconds, MAX_HOLD_S)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if isinstance(error, NewConnectionError):
            # Refused, or a name that does not resolve: no server there to wait for, so no backoff either.
            raise MaxRetryError(_pool, url, error) from error
        if response is not None and response.status in THROTTLING and self.on_throttle:
            self.on_throttle(self.get_retry_after(response))
        return super().increment(method, url, response, error, _pool, _stacktrace)


class _GdalThrottleHandler(logging.Handler):
    def __init__(self, limit: AdaptiveLimit) -> None:
        super().__init__(logging.WARNING)
        self.limit = limit

    def emit(self, record: logging.LogRecord) -> None:
        found = GDAL_RETRY.search(record.getMessage())
        if found and int(found.group(1)) in THROTTLING:
            self.limit.throttled(float(found.group(2)))


@contextlib.contextmanager
def watching_gdal(limit: AdaptiveLimit) -> Iterator[None]:
    """GDAL's retry warnings (through rasterio's logger) count as throttling signals meanwhile."""
    logger = logging.getLogger("rasterio._env")
    handler = _GdalThrottleHandler(limit)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
