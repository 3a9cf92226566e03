"""A synthetic ground whose appearance follows the seasons while its land cover does not.

It stands in for Sentinel-2 when there is no internet: the offline quickstart, the tests and the
benchmarks draw scenes from it, and the made EuroSAT set of the evaluate tests uses the same
land covers, so a representation that learns "same place, any season" has something to find.
Reflectance is a mix of vegetation and a background spectrum; the vegetation share swings with
the season, the texture (orientation, spatial frequency) belongs to the land cover.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
# Surface reflectance per band (B01 ... B12) of the end members.
VEGETATION = (0.03, 0.04, 0.08, 0.04, 0.12, 0.30, 0.38, 0.42, 0.43, 0.40, 0.20, 0.10)
SOIL = (0.08, 0.10, 0.14, 0.18, 0.21, 0.23, 0.25, 0.27, 0.28, 0.28, 0.34, 0.28)
BUILT = (0.12, 0.13, 0.15, 0.17, 0.18, 0.19, 0.20, 0.21, 0.21, 0.20, 0.22, 0.20)
WATER = (0.06, 0.06, 0.05, 0.03, 0.02, 0.015, 0.01, 0.01, 0.01, 0.01, 0.005, 0.003)


@dataclass(frozen=True)
class LandCover:
    name: str  # EuroSAT's class names
    background: tuple[float, ...]
    green_summer: float  # vegetation share at the height of summer
    green_winter: float
    stripes_per_km: float
    orientation_deg: float


LAND_COVERS = (
    LandCover("AnnualCrop", SOIL, 0.85, 0.05, 6.0, 0.0),
    LandCover("Forest", SOIL, 0.95, 0.55, 20.0, 45.0),
    LandCover("HerbaceousVegetation", SOIL, 0.70, 0.30, 12.0, 135.0),
    LandCover("Highway", BUILT, 0.25, 0.10, 2.0, 90.0),
    LandCover("Industrial", BUILT, 0.05, 0.02, 4.0, 30.0),
    LandCover("Pasture", SOIL, 0.80, 0.45, 1.0, 60.0),
    LandCover("PermanentCrop", SOIL, 0.60, 0.35, 9.0, 90.0),
    LandCover("Residential", BUILT, 0.30, 0.15, 14.0, 0.0),
    LandCover("River", WATER, 0.20, 0.10, 1.5, 120.0),
    LandCover("SeaLake", WATER, 0.0, 0.0, 0.5, 0.0),
)


def greenness(cover: LandCover, day: date, lat: float) -> float:
    """Vegetation share on `day`: peaks in mid-July north of the equator, mid-January south of it."""
    peak = 196 if lat >= 0 else 15
    phase = 0.5 + 0.5 * math.cos(2 * math.pi * (day.timetuple().tm_yday - peak) / 365.25)
    return cover.green_winter + (cover.green_summer - cover.green_winter) * phase


def reflectance(cover: LandCover, day: date, lat: float, x_m: np.ndarray, y_m: np.ndarray,
                bands: tuple[str, ...], phase: float, rng: np.random.Generator) -> np.ndarray:
    """(bands, H, W) float32 reflectance at ground coordinates x_m, y_m (metres, any projection)."""
    theta = math.radians(cover.orientation_deg)
    along = (x_m * math.cos(theta) + y_m * math.sin(theta)) / 1000.0
    texture = 0.5 + 0.5 * np.sin(2 * math.pi * cover.stripes_per_km * along + phase)
    share = np.clip(greenness(cover, day, lat) * (0.7 + 0.6 * texture), 0, 1)
    brightness = 0.85 + 0.3 * texture
    columns = [BANDS.index(band) for band in bands]
    veg = np.array(VEGETATION, dtype=np.float32)[columns, None, None]
    back = np.array(cover.background, dtype=np.float32)[columns, None, None]
    mixed = (share * veg + (1 - share) * back) * brightness
    noise = rng.normal(0.0, 0.005, size=mixed.shape)
    return np.clip(mixed + noise, 0.0, 1.0).astype(np.float32)


def cloud_mask(shape: tuple[int, int], cover_percent: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth blobs covering about `cover_percent` of the scene."""
    coarse = rng.random((max(shape[0] // 16, 2), max(shape[1] // 16, 2)))
    rows = np.linspace(0, coarse.shape[0] - 1, shape[0]).round().astype(int)
    cols = np.linspace(0, coarse.shape[1] - 1, shape[1]).round().astype(int)
    field = coarse[np.ix_(rows, cols)]
    return field > np.quantile(field, 1 - cover_percent / 100)


def to_digital_numbers(reflectance_values: np.ndarray, offset: int) -> np.ndarray:
    """Sentinel-2 L2A DN: reflectance × 10000, plus 1000 from processing baseline 04.00 on; 0 is nodata."""
    return np.clip(np.rint(reflectance_values * 10_000) + offset, 1, 65_535).astype(np.uint16)


def location_series(rng: np.random.Generator, days: list[date], size: int,
                    bands: tuple[str, ...]) -> tuple[LandCover, np.ndarray]:
    """One location seen on `days`: (its land cover, uint16 DN (dates, bands, size, size)).

    What the collect stage would store for a location of the synthetic world, made in memory: one
    land cover and stripe phase for the place, the season's greenness per date, and a few metres of
    registration jitter between dates, as between real acquisitions.
    """
    cover = LAND_COVERS[rng.integers(len(LAND_COVERS))]
    lat, phase = float(rng.uniform(-50, 60)), float(rng.uniform(0, 2 * math.pi))
    x0, y0 = rng.uniform(0, 1e5, size=2)
    centres = (np.arange(size) + 0.5) * 10
    cube = []
    for day in days:
        dx, dy = rng.uniform(-20, 20, size=2)
        x, y = np.meshgrid(x0 + dx + centres, y0 + dy - centres)
        cube.append(to_digital_numbers(reflectance(cover, day, lat, x, y, bands, phase, rng), 0))
    return cover, np.stack(cube)
