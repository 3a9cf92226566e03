"""A small BigEarthNet (v1.0, Sentinel-2) in the real on-disk layout, drawn from the synthetic landscape.

torchgeo's `BigEarthNet(bands="s2")` reads it unchanged: `<root>/bigearthnet-{train,val,test}.csv`
pair S2 and S1 patch names, and `<root>/BigEarthNet-v1.0/<patch>/<patch>_<band>.tif` are single-band
uint16 GeoTIFFs at each band's resolution (120×120 at 10 m, 60×60 at 20 m, 20×20 at 60 m) beside
`<patch>_labels_metadata.json` with the CORINE (43-class) names. Each patch holds two land covers
(one per half) on a random day, so its labels are multi-label. Synthetic, for offline runs and tests.
"""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from jobs.localcloud import landscape

S2_DIR = "BigEarthNet-v1.0"
SIZE = 120
RESOLUTION = {
    "B01": 60,
    "B09": 60,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B8A": 20,
    "B11": 20,
    "B12": 20,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B08": 10,
}
CORINE = {
    "AnnualCrop": "Non-irrigated arable land",
    "Forest": "Broad-leaved forest",
    "HerbaceousVegetation": "Natural grassland",
    "Highway": "Road and rail networks and associated land",
    "Industrial": "Industrial or commercial units",
    "Pasture": "Pastures",
    "PermanentCrop": "Vineyards",
    "Residential": "Discontinuous urban fabric",
    "River": "Water courses",
    "SeaLake": "Sea and ocean",
}


def patch(covers: tuple[landscape.LandCover, landscape.LandCover], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Band name -> uint16 DN at that band's resolution; the left half is covers[0], the right covers[1]."""
    day = date(2017, 6, 1) + timedelta(days=int(rng.integers(0, 365)))
    lat = float(rng.uniform(36, 70))  # BigEarthNet is European
    x0, y0 = rng.uniform(0, 1e5, size=2)
    centres = (np.arange(SIZE) + 0.5) * 10
    x, y = np.meshgrid(x0 + centres, y0 - centres)
    halves = [
        landscape.reflectance(cover, day, lat, x, y, landscape.BANDS, float(rng.uniform(0, 2 * math.pi)), rng)
        for cover in covers
    ]
    full = np.where(np.arange(SIZE)[None, None, :] < SIZE // 2, halves[0], halves[1])
    bands = {}
    for band, values in zip(landscape.BANDS, landscape.to_digital_numbers(full, 0)):
        factor = RESOLUTION[band] // 10
        bands[band] = values.reshape(SIZE // factor, factor, SIZE // factor, factor).mean((1, 3)).astype(np.uint16)
    return bands


def make(root: Path, per_split: dict[str, int], seed: int = 0) -> Path:
    """Write `per_split[split]` patches per split; returns root."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    counter = 0
    for split, count in per_split.items():
        lines = []
        for _ in range(count):
            counter += 1
            name = f"S2A_MSIL2A_20170613T101031_{counter // 100}_{counter % 100}"
            first, second = rng.choice(len(landscape.LAND_COVERS), size=2, replace=False)
            covers = (landscape.LAND_COVERS[first], landscape.LAND_COVERS[second])
            folder = root / S2_DIR / name
            folder.mkdir(parents=True, exist_ok=True)
            for band, values in patch(covers, rng).items():
                size = values.shape[0]
                with rasterio.open(
                    folder / f"{name}_{band}.tif",
                    "w",
                    driver="GTiff",
                    width=size,
                    height=size,
                    count=1,
                    dtype="uint16",
                    crs="EPSG:32632",
                    transform=from_origin(500000, 5600000, RESOLUTION[band], RESOLUTION[band]),
                ) as out:
                    out.write(values, 1)
            labels = sorted({CORINE[cover.name] for cover in covers})
            (folder / f"{name}_labels_metadata.json").write_text(
                json.dumps({"labels": labels, "acquisition_date": "2017-06-13 10:10:31", "tile_source": "synthetic"})
            )
            lines.append(f"{name},S1A_IW_GRDH_1SDV_synthetic_{counter}")
        (root / f"bigearthnet-{split}.csv").write_text("".join(line + "\n" for line in lines))
    return root
