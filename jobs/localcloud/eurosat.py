"""A small EuroSAT in the real on-disk layout, drawn from the synthetic landscape's land covers.

torchgeo's EuroSAT class reads it unchanged: `<root>/eurosat-{train,val,test}.txt` list image
names (as `.jpg`, like the release), and `<root>/ds/images/remote_sensing/otherDatasets/
sentinel_2/tif/<Class>/<Class>_<n>.tif` are 13-band uint16 64×64 GeoTIFFs in the release's band
order. Each image is one land cover on a random day and latitude, so a classifier must see past
the season. Synthetic, for offline runs and tests; the real set comes from torchgeo's download.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from jobs.localcloud import landscape

BASE_DIR = Path("ds", "images", "remote_sensing", "otherDatasets", "sentinel_2", "tif")
RELEASE_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
SIZE = 64


def image(cover: landscape.LandCover, rng: np.random.Generator) -> np.ndarray:
    day = date(2017, 1, 1) + timedelta(days=int(rng.integers(0, 730)))
    lat = float(rng.uniform(-50, 60))
    x0, y0 = rng.uniform(0, 1e5, size=2)
    centres = (np.arange(SIZE) + 0.5) * 10
    x, y = np.meshgrid(x0 + centres, y0 - centres)
    spectral = tuple(b for b in RELEASE_BANDS if b != "B10")
    values = landscape.reflectance(cover, day, lat, x, y, spectral, float(rng.uniform(0, 2 * math.pi)), rng)
    cirrus = np.full((1, SIZE, SIZE), 0.002, np.float32)  # B10 sees almost nothing at the surface
    stacked = np.concatenate([values[:9], cirrus, values[9:]])
    return landscape.to_digital_numbers(stacked, 0)


def make(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """Write `per_class[split]` images of every class per split; returns root."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    counter = 0
    for split, count in per_class.items():
        names = []
        for cover in landscape.LAND_COVERS:
            folder = root / BASE_DIR / cover.name
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                counter += 1
                name = f"{cover.name}_{counter}"
                with rasterio.open(
                    folder / f"{name}.tif",
                    "w",
                    driver="GTiff",
                    width=SIZE,
                    height=SIZE,
                    count=len(RELEASE_BANDS),
                    dtype="uint16",
                    crs="EPSG:32631",
                    transform=from_origin(500000, 5600000, 10, 10),
                ) as out:
                    out.write(image(cover, rng))
                names.append(f"{name}.jpg")
        (root / f"eurosat-{split}.txt").write_text("".join(n + "\n" for n in names))
    return root
