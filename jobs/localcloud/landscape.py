"""A synthetic ground whose appearance follows the seasons while its land cover does not.

It stands in for Sentinel-2 when there is no internet: the offline quickstart, the tests and the
benchmarks draw scenes from it, and the made EuroSAT set of the evaluate tests uses the same
land covers, so a representation that learns "same place, any season" has something to find.
Reflectance is a mix of vegetation and a background spectrum; the vegetation share swings with
the season, the spatial structure (rows, building blocks, roads, canopy...) belongs to the land
cover. A place is a layout of a few land-cover parcels, so two places of one class still differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np

VERSION = 2  # bump when what the ground looks like changes: cached worlds and made datasets are keyed by it
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
    pattern: str  # the spatial structure, a key of STRUCTURES
    cycles_per_km: float
    orientation_deg: float


LAND_COVERS = (
    LandCover("AnnualCrop", SOIL, 0.85, 0.05, "rows", 6.0, 0.0),
    LandCover("Forest", SOIL, 0.95, 0.55, "canopy", 25.0, 0.0),
    LandCover("HerbaceousVegetation", SOIL, 0.70, 0.30, "patches", 5.0, 0.0),
    LandCover("Highway", BUILT, 0.60, 0.30, "lines", 2.0, 90.0),
    LandCover("Industrial", BUILT, 0.05, 0.02, "blocks", 3.0, 30.0),
    LandCover("Pasture", SOIL, 0.80, 0.45, "flat", 1.0, 60.0),
    LandCover("PermanentCrop", SOIL, 0.60, 0.35, "dots", 9.0, 90.0),
    LandCover("Residential", BUILT, 0.30, 0.15, "blocks", 14.0, 0.0),
    LandCover("River", WATER, 0.80, 0.40, "meander", 1.5, 120.0),
    LandCover("SeaLake", WATER, 0.0, 0.0, "flat", 0.5, 0.0),
)


def greenness(cover: LandCover, day: date, lat: float) -> float:
    """Vegetation share on `day`: peaks in mid-July north of the equator, mid-January south of it."""
    peak = 196 if lat >= 0 else 15
    phase = 0.5 + 0.5 * math.cos(2 * math.pi * (day.timetuple().tm_yday - peak) / 365.25)
    return cover.green_winter + (cover.green_summer - cover.green_winter) * phase


def _isotropic(u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """A fixed quasi-random field of mean 0 and standard deviation 0.5: cosines in seven directions, phases from
    `phase`."""
    waves = [
        np.cos(u * math.cos(a) + v * math.sin(a) + phase * (k + 1) * 1.7)
        for k, a in enumerate(np.linspace(0, math.pi, 7, endpoint=False))
    ]
    return np.sum(waves, axis=0) / math.sqrt(7 / 2) / 2


# Vegetated share of the ground in [0, 1] from the along (u) and across (v) phases of a land cover's pattern.
STRUCTURES = {
    "rows": lambda u, v, phase: 0.5 + 0.5 * np.sin(u),
    "dots": lambda u, v, phase: ((0.5 + 0.5 * np.sin(u)) * (0.5 + 0.5 * np.sin(v))) ** 2,
    # buildings (not vegetated) on a grid, with green between them
    "blocks": lambda u, v, phase: 1.0 - ((np.sin(u) > -0.2) & (np.sin(v) > -0.2)).astype(np.float32),
    "lines": lambda u, v, phase: 1.0 - (0.5 + 0.5 * np.sin(u)) ** 8,  # a road every 1 / cycles_per_km
    # a winding channel of open water through the cover
    "meander": lambda u, v, phase: 1.0 - (0.5 + 0.5 * np.sin(u + 1.5 * np.sin(v * 3))) ** 6,
    "canopy": lambda u, v, phase: np.clip(0.5 + 0.5 * _isotropic(u, v, phase), 0, 1),
    "patches": lambda u, v, phase: (_isotropic(u, v, phase) > 0).astype(np.float32) * 0.8 + 0.1,
    "flat": lambda u, v, phase: 0.5 + 0.1 * np.sin(u),
}


def texture(cover: LandCover, x_m: np.ndarray, y_m: np.ndarray, phase: float) -> np.ndarray:
    """Vegetated share of the ground in [0, 1]: the land cover's structure, which no season changes.

    Classes differ by shape (rows, a dot grid, building blocks, thin lines, canopy speckle,
    smooth patches, flat), as real land covers do, so the structure survives the crops, flips and
    colour jitter of SSL augmentation; a class told apart only by a stripe frequency would not.
    """
    theta = math.radians(cover.orientation_deg)
    scale = 2 * math.pi * cover.cycles_per_km / 1000.0
    u = (x_m * math.cos(theta) + y_m * math.sin(theta)) * scale + phase
    v = (-x_m * math.sin(theta) + y_m * math.cos(theta)) * scale + 2 * phase
    return STRUCTURES[cover.pattern](u, v, phase)


def reflectance(
    cover: LandCover,
    day: date,
    lat: float,
    x_m: np.ndarray,
    y_m: np.ndarray,
    bands: tuple[str, ...],
    phase: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """(bands, H, W) float32 reflectance at ground coordinates x_m, y_m (metres, any projection)."""
    structure = texture(cover, x_m, y_m, phase)
    share = np.clip(greenness(cover, day, lat) * (0.4 + 1.2 * structure), 0, 1)
    brightness = 0.85 + 0.3 * structure
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


@dataclass(frozen=True)
class Parcels:
    """A place's layout: Voronoi parcels around `centres` (ground metres), each its own land cover and pattern phase."""

    centres: np.ndarray  # (n, 2) x, y
    covers: tuple[LandCover, ...]
    phases: tuple[float, ...]

    def reflectance(
        self, day: date, lat: float, x_m: np.ndarray, y_m: np.ndarray, bands: tuple[str, ...], rng: np.random.Generator
    ) -> np.ndarray:
        """(bands, H, W) reflectance: every pixel takes the land cover of the nearest parcel centre."""
        nearest = np.argmin(
            (x_m[None] - self.centres[:, 0, None, None]) ** 2 + (y_m[None] - self.centres[:, 1, None, None]) ** 2,
            axis=0,
        )
        out = np.empty((len(bands), *x_m.shape), np.float32)
        for index in np.unique(nearest):
            inside = nearest == index
            out[:, inside] = reflectance(
                self.covers[index], day, lat, x_m[inside][None], y_m[inside][None], bands, self.phases[index], rng
            )[:, 0]
        return out


PARCELS_PER_LOCATION = 5


def parcels(rng: np.random.Generator, left: float, top: float, extent_m: float, count: int) -> Parcels:
    """`count` parcels with centres inside the square [left, left + extent] × [top - extent, top]."""
    centres = np.column_stack([rng.uniform(left, left + extent_m, count), rng.uniform(top - extent_m, top, count)])
    covers = tuple(LAND_COVERS[i] for i in rng.integers(len(LAND_COVERS), size=count))
    return Parcels(centres, covers, tuple(float(p) for p in rng.uniform(0, 2 * math.pi, count)))


def location_series(
    rng: np.random.Generator,
    days: list[date],
    size: int,
    bands: tuple[str, ...],
    parcel_count: int = PARCELS_PER_LOCATION,
) -> tuple[Parcels, np.ndarray]:
    """One location seen on `days`: (its parcels, uint16 DN (dates, bands, size, size)).

    What the collect stage would store for a location of the synthetic world, made in memory: a
    fixed layout of land-cover parcels for the place, the season's greenness per date, and a few
    metres of registration jitter between dates, as between real acquisitions.
    """
    lat = float(rng.uniform(-50, 60))
    x0, y0 = rng.uniform(0, 1e5, size=2)
    layout = parcels(rng, x0, y0, size * 10.0, parcel_count)
    centres = (np.arange(size) + 0.5) * 10
    cube = []
    for day in days:
        dx, dy = rng.uniform(-20, 20, size=2)
        x, y = np.meshgrid(x0 + dx + centres, y0 + dy - centres)
        cube.append(to_digital_numbers(layout.reflectance(day, lat, x, y, bands, rng), 0))
    return layout, np.stack(cube)
