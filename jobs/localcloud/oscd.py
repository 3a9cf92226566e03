"""A small OSCD (Onera Satellite Change Detection) in the real on-disk layout, from the synthetic landscape.

torchgeo's `OSCD` reads it unchanged: `<root>/Onera Satellite Change Detection dataset - Images/
<city>/imgs_{1,2}_rect/<band>.tif` (13 single-band uint16 images, all at 10 m) and `dates.txt`, and
`<root>/Onera Satellite Change Detection dataset - {Train,Test} Labels/<city>/cm/cm.png` (255 =
changed). The two dates are in different seasons; inside a few rectangles the land cover itself
changes (fields built over, forest cleared), so a change detector has to see past the season.
Synthetic, for offline runs and tests.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np

from jobs.localcloud import landscape

IMAGES = "Onera Satellite Change Detection dataset - Images"
LABELS = "Onera Satellite Change Detection dataset - {split} Labels"
RELEASE_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
CHANGES = (
    ("AnnualCrop", "Industrial"),
    ("Forest", "AnnualCrop"),
    ("Pasture", "Residential"),
    ("HerbaceousVegetation", "Highway"),
    ("PermanentCrop", "Residential"),
)


def cover(name: str) -> landscape.LandCover:
    return next(c for c in landscape.LAND_COVERS if c.name == name)


def scene(layout: np.ndarray, day: date, lat: float, rng: np.random.Generator) -> np.ndarray:
    """(13, H, W) DN: each pixel shows the land cover `layout` names, on `day`."""
    height, width = layout.shape
    x, y = np.meshgrid((np.arange(width) + 0.5) * 10, -(np.arange(height) + 0.5) * 10)
    spectral = tuple(b for b in RELEASE_BANDS if b != "B10")
    image = np.zeros((len(spectral), height, width), np.float32)
    for index in np.unique(layout):
        values = landscape.reflectance(landscape.LAND_COVERS[index], day, lat, x, y, spectral, 0.0, rng)
        image = np.where(layout[None] == index, values, image)
    cirrus = np.full((1, height, width), 0.002, np.float32)
    return landscape.to_digital_numbers(np.concatenate([image[:9], cirrus, image[9:]]), 0)


def city(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[date, date]]:
    """(before, after, change mask, dates): a patchwork of land covers, a few parcels of it changed."""
    blocks = size // 16
    names = [c.name for c in landscape.LAND_COVERS]
    layout = np.kron(rng.integers(0, len(names), size=(blocks, blocks)), np.ones((16, 16), int))
    after = layout.copy()
    changed = np.zeros_like(layout, bool)
    for _ in range(max(size * size // 2048, 2)):
        old, new = CHANGES[rng.integers(len(CHANGES))]
        top, left = rng.integers(0, size - 24, size=2)
        height, width = rng.integers(8, 24, size=2)
        window = (slice(top, top + height), slice(left, left + width))
        after[window] = names.index(new)
        layout[window] = names.index(old)
        changed[window] = True
    first = date(2015, 8, 1) + timedelta(days=int(rng.integers(0, 60)))
    second = first + timedelta(days=int(rng.integers(150, 600)))
    lat = float(rng.uniform(20, 60))
    return scene(layout, first, lat, rng), scene(after, second, lat, rng), changed, (first, second)


def make(root: Path, cities: dict[str, int], size: int = 128, seed: int = 0) -> Path:
    """Write `cities[split]` cities per split ("train", "test"), each `size`×`size` px; returns root."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    counter = 0
    for split, count in cities.items():
        for _ in range(count):
            counter += 1
            name = f"city{counter:02d}"
            before, after, changed, dates = city(size, rng)
            for number, image in ((1, before), (2, after)):
                folder = root / IMAGES / name / f"imgs_{number}_rect"
                folder.mkdir(parents=True, exist_ok=True)
                for band, values in zip(RELEASE_BANDS, image):
                    with rasterio.open(
                        folder / f"{band}.tif",
                        "w",
                        driver="GTiff",
                        width=size,
                        height=size,
                        count=1,
                        dtype="uint16",
                        crs="EPSG:32631",
                        transform=from_origin(500000, 5600000, 10, 10),
                    ) as out:
                        out.write(values, 1)
            (root / IMAGES / name / "dates.txt").write_text(
                "".join(f"date_{n}: {d:%Y%m%d}\n" for n, d in enumerate(dates, 1))
            )
            masks = root / LABELS.format(split=split.capitalize()) / name / "cm"
            masks.mkdir(parents=True, exist_ok=True)
            Image.fromarray((changed * 255).astype(np.uint8)).save(masks / "cm.png")
    return root
