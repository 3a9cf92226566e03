"""Finding a location's scenes: one STAC search per date window, the least cloudy acceptable scene.

Selection happens here rather than with the API's `query`/`sortby`, because not every STAC API
offers those extensions and the rule must not change with the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import date, datetime, time, timezone

import pystac

from jobs.collect.pacing import AdaptiveLimit, ReportingRetry
from jobs.collect.sampling import Location, search_window
from secoctl.spec import Collect

# Connection and read timeouts (s) of a STAC request; 429 and 5xx are retried with backoff, honouring
# Retry-After up to pacing.MAX_HOLD_S; a refused connection or an unknown host is not retried.
STAC_TIMEOUT = (10.0, 60.0)


def open_catalog(collect: Collect, limit: AdaptiveLimit | None = None):
    """A pystac-client Client whose throttled searches slow `limit` down.

    Items come back unsigned: Planetary Computer's hrefs are signed just before they are read
    (jobs.collect.signing), so a token cannot expire between search and read.
    """
    import pystac_client
    from pystac_client.stac_api_io import StacApiIO

    retry = ReportingRetry(
        total=6,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,
        respect_retry_after_header=True,
        raise_on_status=True,
        on_throttle=limit.throttled if limit else None,
    )
    stac_io = StacApiIO(timeout=STAC_TIMEOUT, max_retries=retry)
    return pystac_client.Client.open(collect.stac_url, stac_io=stac_io)


def _contains_patch(item: pystac.Item, location: Location, half_lon: float, half_lat: float) -> bool:
    from shapely.geometry import box, shape

    patch = box(location.lon - half_lon, location.lat - half_lat, location.lon + half_lon, location.lat + half_lat)
    return shape(item.geometry).contains(patch)


def choose(items: Sequence[pystac.Item], target: date, max_cloud: float, covers) -> pystac.Item | None:
    """Least cloud cover at most `max_cloud`, covering the patch; ties go to the date nearest the target."""
    noon = datetime.combine(target, time(12), tzinfo=timezone.utc)
    acceptable = [item for item in items if item.properties.get("eo:cloud_cover", 100.0) <= max_cloud and covers(item)]
    if not acceptable:
        return None
    return min(
        acceptable,
        key=lambda item: (item.properties["eo:cloud_cover"], abs((item.datetime - noon).total_seconds()), item.id),
    )


def find_scenes(
    catalog, collect: Collect, location: Location, half_lon: float, half_lat: float, searches: Executor
) -> list[pystac.Item] | None:
    """One scene per date of the location (newest first), or None when a date has none.

    The dates' searches run at once on `searches`: a location costs one search round trip, not `timestamps`.
    """
    point = {"type": "Point", "coordinates": [location.lon, location.lat]}

    def scene_near(target: date) -> pystac.Item | None:
        start, end = search_window(target, collect.window_days)
        search = catalog.search(
            collections=[collect.collection],
            intersects=point,
            datetime=[
                datetime.combine(start, time(0), tzinfo=timezone.utc),
                datetime.combine(end, time(23, 59, 59), tzinfo=timezone.utc),
            ],
            max_items=500,
        )
        return choose(
            list(search.items()),
            target,
            collect.max_cloud,
            lambda candidate: _contains_patch(candidate, location, half_lon, half_lat),
        )

    chosen = list(searches.map(scene_near, location.dates))
    return None if any(item is None for item in chosen) else chosen
