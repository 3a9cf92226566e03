"""Synthetic Sentinel-2 L2A scenes shaped like Planetary Computer's, for the spec's own locations.

For every candidate location of a collect spec and every date it asks for, one clear scene near
that date (plus, at the first date, a cloudier acceptable one and one over the cloud limit dated
exactly on it, so scene choice is exercised) as per-band COGs in the location's UTM zone, and a
STAC Item with Planetary Computer's asset keys and `eo:`, `s2:`, `sat:` and `proj:` properties.
Locations with `index % missing_every == missing_every - 1` lack their last date, so the stage
has something to drop. The scenes are synthetic; nothing here pretends otherwise.

The shapes real items come in are there too: a third of the locations see one date through a
tile of the neighbouring UTM zone (real tiles overlap zones); at the third date a clearer scene
whose footprint is a partial polygon with nodata over the location must be passed over, and the
fourth date's scene is partial too but covers it; old acquisitions are in part reprocessed to
baseline 05.00, so the baseline, not the date, decides the +1000 offset; and hrefs are blob paths
(`{account}/{container}/...`) that the COG server can put behind SAS tokens.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from jobs.collect.pixels import from_lonlat
from jobs.collect.sampling import Location, candidate
from jobs.localcloud import landscape
from secoctl.spec import Collect

COLLECTION = "sentinel-2-l2a"
VERSION = 2  # bump when the scenes or items change: cached worlds are keyed by it
STORAGE_ACCOUNT, STORAGE_CONTAINER = "sentinel2l2a01", "sentinel2-l2"  # Planetary Computer's, for sentinel-2-l2a
BASELINE_04_START = date(2022, 1, 25)  # processed from here on with baseline 04.00 or later: DNs carry +1000
PARTIAL_MARGIN_M = 50.0  # how far a partial scene's swath edge passes from the patch
RESOLUTION = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B11": 20,
    "B12": 20,
    "SCL": 20,
}
EO_BANDS = {  # name: (common name, description, centre wavelength µm, FWHM µm), as Planetary Computer lists them
    "B01": ("coastal", "Band 1 - Coastal aerosol", 0.443, 0.027),
    "B02": ("blue", "Band 2 - Blue", 0.49, 0.098),
    "B03": ("green", "Band 3 - Green", 0.56, 0.045),
    "B04": ("red", "Band 4 - Red", 0.665, 0.038),
    "B05": ("rededge", "Band 5 - Vegetation red edge 1", 0.704, 0.019),
    "B06": ("rededge", "Band 6 - Vegetation red edge 2", 0.74, 0.018),
    "B07": ("rededge", "Band 7 - Vegetation red edge 3", 0.783, 0.028),
    "B08": ("nir", "Band 8 - NIR", 0.842, 0.145),
    "B8A": ("rededge", "Band 8A - Vegetation red edge 4", 0.865, 0.033),
    "B09": ("nir09", "Band 9 - Water vapor", 0.945, 0.026),
    "B11": ("swir16", "Band 11 - SWIR (1.6)", 1.61, 0.143),
    "B12": ("swir22", "Band 12 - SWIR (2.2)", 2.19, 0.242),
}
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
]


@dataclass(frozen=True)
class Scene:
    location: Location
    day: date
    cloud_cover: float
    position: int  # which of the location's dates
    alternative: int  # 0: the clear scene; 1, 2: the distractors at the first date; 3: one missing the patch
    zone_shift: int = 0  # -1 or 1: a tile of the neighbouring UTM zone
    coverage: str = "full"  # "covers": nodata beyond the patch; "misses": nodata over the patch

    @property
    def baseline(self) -> str:
        if self.day >= BASELINE_04_START:
            return "05.09"
        reprocessed = (self.location.index + self.position) % 3 == 0  # ESA's reprocessing to 05.00
        return "05.00" if reprocessed else "03.01"

    @property
    def offset(self) -> int:
        return 1000 if tuple(int(p) for p in self.baseline.split(".")) >= (4, 0) else 0

    @property
    def home_epsg(self) -> int:
        return utm_epsg(self.location, 0)

    @property
    def epsg(self) -> int:
        return utm_epsg(self.location, self.zone_shift)

    @property
    def item_id(self) -> str:
        stamp = self.day.strftime("%Y%m%d") + f"T10{self.alternative:02d}{self.location.index % 60:02d}"
        orbit = self.location.index % 143 + 1
        return f"S2{'AB'[self.location.index % 2]}_MSIL2A_{stamp}_R{orbit:03d}_T{self.mgrs_tile}_{stamp}"

    @property
    def mgrs_tile(self) -> str:
        band = "CDEFGHJKLMNPQRSTUVWX"[min(int((self.location.lat + 80) // 8), 19)]
        square = "ABCDEFGHJKLMNPQRSTUVWXYZ"
        return (
            f"{self.epsg % 100:02d}{band}{square[self.location.index % 24]}{square[(self.location.index // 24) % 20]}"
        )


def utm_epsg(location: Location, zone_shift: int) -> int:
    zone = (int((location.lon + 180) // 6) + zone_shift) % 60 + 1
    return (32600 if location.lat >= 0 else 32700) + zone


def neighbouring_zone(location: Location) -> int:
    """-1 or 1: the zone whose edge is nearer."""
    return 1 if (location.lon + 180) % 6 >= 3 else -1


def scenes_of(collect: Collect, location: Location, missing_every: int) -> list[Scene]:
    rng = np.random.default_rng([collect.seed, location.index, 1])
    last_missing = missing_every > 0 and location.index % missing_every == missing_every - 1
    scenes = []
    for position, target in enumerate(location.dates):
        if last_missing and position == len(location.dates) - 1:
            continue
        jitter = int(rng.integers(-int(collect.window_days / 2) + 1, int(collect.window_days / 2)))
        clear = float(rng.uniform(0, collect.max_cloud * 0.4))
        shift = neighbouring_zone(location) if position == 1 and location.index % 3 == 1 else 0
        coverage = "covers" if position == 3 else "full"
        scenes.append(Scene(location, target + timedelta(days=jitter), round(clear, 3), position, 0, shift, coverage))
        if position == 2:  # clearer, but its data polygon leaves the location in nodata
            scenes.append(Scene(location, target, 0.0, position, 3, coverage="misses"))
        if position == 0:
            scenes.append(Scene(location, target, round(min(collect.max_cloud, clear + 5.0), 3), position, 1))
            scenes.append(Scene(location, target, round(min(100.0, collect.max_cloud + 25.0), 3), position, 2))
    return scenes


def _grid(scene: Scene, patch_size: int) -> tuple[float, float, int]:
    """Upper-left corner (UTM metres) and width in 10 m pixels of a scene around its location."""
    x, y = from_lonlat(scene.epsg).transform(scene.location.lon, scene.location.lat)
    pixels = int(math.ceil(2 * patch_size / 6) * 6) + 12  # divisible by the 20 m and 60 m grids
    rng = np.random.default_rng([scene.location.index, scene.alternative, scene.day.toordinal()])
    shift = rng.uniform(-patch_size * 2.5, patch_size * 2.5, size=2)  # metres; the patch stays inside
    left = math.floor((x - pixels * 5 + shift[0]) / 60) * 60
    top = math.ceil((y + pixels * 5 + shift[1]) / 60) * 60
    return float(left), float(top), pixels


def _data_side(scene: Scene, patch_size: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Where a partial scene has data: one side of a slanted swath edge passing PARTIAL_MARGIN_M beyond the patch."""
    east, north = from_lonlat(scene.epsg).transform(scene.location.lon, scene.location.lat)
    half = patch_size * 5.0
    across = (x - east) + 0.3 * (y - north)
    edge = 1.3 * half + PARTIAL_MARGIN_M  # the patch's farthest corner is at 1.3 × half
    return across < edge if scene.coverage == "covers" else across > edge


def footprint(scene: Scene, patch_size: int, bounds: tuple[float, float, float, float]):
    """The scene's data polygon in its own CRS: its square, cut along the swath edge when partial."""
    from shapely.geometry import Polygon, box

    square = box(*bounds)
    if scene.coverage == "full":
        return square
    east, north = from_lonlat(scene.epsg).transform(scene.location.lon, scene.location.lat)
    far = 1e6
    edge = 1.3 * patch_size * 5.0 + PARTIAL_MARGIN_M
    on_edge = [(east + edge - 0.3 * (dy), north + dy) for dy in (-far, far)]
    side = -far if scene.coverage == "covers" else far
    half_plane = Polygon([*on_edge, (east + side, north + far), (east + side, north - far)])
    return square.intersection(half_plane)


def _write_cog(path: Path, array: np.ndarray, epsg: int, transform: Any) -> None:
    import rasterio

    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=array.shape[1],
        height=array.shape[0],
        count=1,
        dtype=array.dtype.name,
        crs=f"EPSG:{epsg}",
        transform=transform,
        nodata=0,
        compress="deflate",
    ) as dataset:
        dataset.write(array, 1)


def render_scene(scene: Scene, collect: Collect, bands: tuple[str, ...], folder: Path) -> dict[str, dict[str, Any]]:
    """Write one COG per band (and SCL); returns each asset's proj: fields."""
    from pyproj import Transformer
    from rasterio.transform import from_origin

    left, top, pixels = _grid(scene, collect.patch_size)
    # the ground is laid out in the location's own zone, whichever zone's tile sees it
    east, north = from_lonlat(scene.home_epsg).transform(scene.location.lon, scene.location.lat)
    to_home = Transformer.from_crs(scene.epsg, scene.home_epsg, always_xy=True) if scene.zone_shift else None
    extent = collect.patch_size * 10.0  # the parcels fill the patch the collect stage will cut
    layout = landscape.parcels(
        np.random.default_rng([collect.seed, scene.location.index, 2]),
        east - extent / 2,
        north + extent / 2,
        extent,
        landscape.PARCELS_PER_LOCATION,
    )
    rng = np.random.default_rng([scene.location.index, scene.alternative, scene.day.toordinal(), 4])
    folder.mkdir(parents=True, exist_ok=True)
    fields = {}
    for band in (*bands, "SCL"):
        size = RESOLUTION[band]
        width = pixels * 10 // size
        centres = (np.arange(width) + 0.5) * size
        x, y = np.meshgrid(left + centres, top - centres)
        has_data = _data_side(scene, collect.patch_size, x, y) if scene.coverage != "full" else np.ones_like(x, bool)
        mask = landscape.cloud_mask(
            (width, width),
            scene.cloud_cover,
            np.random.default_rng([scene.location.index, scene.alternative, scene.day.toordinal(), 5]),
        )
        array = np.zeros((width, width), np.uint8 if band == "SCL" else np.uint16)  # 0: nodata in every band
        if band == "SCL":
            array[has_data] = np.where(mask[has_data], 9, 4)  # 9: cloud high probability, 4: vegetation
        else:
            # only pixels with data are made: a partial scene costs its share of a full one
            x_data, y_data = x[None, has_data], y[None, has_data]
            if to_home:
                x_data, y_data = to_home.transform(x_data, y_data)
            values = layout.reflectance(scene.day, scene.location.lat, x_data, y_data, (band,), rng)[0, 0]
            values = np.where(mask[has_data], 0.7, values)
            array[has_data] = landscape.to_digital_numbers(values, scene.offset)
        transform = from_origin(left, top, size, size)
        _write_cog(folder / f"{band}.tif", array, scene.epsg, transform)
        fields[band] = {
            "proj:bbox": [left, top - width * size, left + width * size, top],
            "proj:shape": [width, width],
            "proj:transform": list(transform)[:6],
            "gsd": size,
        }
    return fields


def stac_item(scene: Scene, fields: dict[str, dict[str, Any]], href_base: str, patch_size: int) -> dict[str, Any]:
    from pyproj import Transformer

    square = fields["SCL"]["proj:bbox"]
    data = footprint(scene, patch_size, tuple(square))
    nodata_percent = round(100 * (1 - data.area / ((square[2] - square[0]) * (square[3] - square[1]))), 2)
    to_lonlat = Transformer.from_crs(scene.epsg, 4326, always_xy=True)
    ring = [to_lonlat.transform(x, y) for x, y in data.exterior.coords]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    acquired = datetime.combine(scene.day, time(10, 30, 21), tzinfo=timezone.utc)
    stamp, orbit = f"{acquired:%Y%m%dT%H%M%S}", scene.location.index % 143 + 1
    product = (
        f"S2{'AB'[scene.location.index % 2]}_MSIL2A_{stamp}_N{scene.baseline.replace('.', '')}_R{orbit:03d}"
        f"_T{scene.mgrs_tile}_{stamp}.SAFE"
    )
    assets = {}
    for band, proj in fields.items():
        asset = {
            "href": f"{href_base}/{STORAGE_ACCOUNT}/{STORAGE_CONTAINER}/{scene.item_id}/{band}.tif",
            "type": COG_TYPE,
            "roles": ["data"],
            **proj,
        }
        if band == "SCL":
            asset["title"] = "Scene classfication map (SCL)"
        else:
            common, description, centre, width = EO_BANDS[band]
            asset["title"] = f"{description} - {proj['gsd']}m"
            asset["eo:bands"] = [
                {
                    "name": band,
                    "common_name": common,
                    "description": description,
                    "center_wavelength": centre,
                    "full_width_half_max": width,
                }
            ]
        assets[band] = asset
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": STAC_EXTENSIONS,
        "id": scene.item_id,
        "collection": COLLECTION,
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
        "properties": {
            "datetime": acquired.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "platform": f"Sentinel-2{'AB'[scene.location.index % 2]}",
            "proj:epsg": scene.epsg,
            "instruments": ["msi"],
            "s2:mgrs_tile": scene.mgrs_tile,
            "constellation": "Sentinel 2",
            "eo:cloud_cover": scene.cloud_cover,
            "s2:product_uri": product,
            "s2:product_type": "S2MSI2A",
            "s2:processing_baseline": scene.baseline,
            "sat:orbit_state": "descending",
            "sat:relative_orbit": scene.location.index % 143 + 1,
            "s2:datatake_type": "INS-NOBS",
            "s2:nodata_pixel_percentage": nodata_percent,
            "s2:high_proba_clouds_percentage": scene.cloud_cover,
            "s2:generation_time": (acquired + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
        "assets": assets,
        "links": [],
    }


def collection_json() -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": COLLECTION,
        "title": "Sentinel-2 Level-2A (synthetic)",
        "description": (
            "Synthetic scenes shaped like Planetary Computer's sentinel-2-l2a, made by secoctl for offline runs."
        ),
        "license": "proprietary",
        "links": [],
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2015-06-27T10:25:31Z", None]]},
        },
    }


HREF_BASE = "{cog_server}"  # the COG server's address, filled in when the items are served


def scene_folder(root: Path, item_id: str) -> Path:
    """Where a scene's COGs lie: the COG server serves `root/cogs` as blob paths `/{account}/{container}/...`."""
    return root / "cogs" / STORAGE_ACCOUNT / STORAGE_CONTAINER / item_id


def location_items(
    collect: Collect, index: int, root: Path, missing_every: int, corrupt: frozenset[int], bands: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Render one candidate location's scenes under `root/cogs`; returns their STAC items."""
    features = []
    for scene in scenes_of(collect, candidate(collect, index), missing_every):
        fields = render_scene(scene, collect, bands, scene_folder(root, scene.item_id))
        features.append(stac_item(scene, fields, HREF_BASE, collect.patch_size))
        if index in corrupt and scene.position == 0 and scene.alternative == 0:
            damaged = scene_folder(root, scene.item_id) / "B04.tif"
            payload = damaged.read_bytes()
            damaged.write_bytes(payload[: len(payload) // 3] + os.urandom(len(payload) // 3))
    return features


def build(
    collect: Collect,
    root: Path,
    missing_every: int = 7,
    corrupt: frozenset[int] = frozenset(),
    bands: tuple[str, ...] | None = None,
    processes: int | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> Path:
    """Write scenes for the spec's candidate locations under `root`; returns the items file.

    Only the spec's bands (and SCL) are rendered unless `bands` says otherwise: the collect stage
    reads no others. Locations are independent, so they are rendered by a pool of `processes`
    (default: one per CPU this process may use); the items keep the locations' order. Asset hrefs
    start with HREF_BASE. `corrupt` names locations whose first clear scene gets a damaged red band.
    """
    bands = tuple(bands or collect.bands)
    processes = processes or len(os.sched_getaffinity(0))
    render = partial(location_items, collect, root=root, missing_every=missing_every, corrupt=corrupt, bands=bands)
    features: list[dict[str, Any]] = []
    step = max(collect.locations // 10, 1)
    # fork: spawn would re-run the caller's main module, which a script need not guard; the children
    # only run numpy, pyproj and rasterio on their own files
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        for done, items in enumerate(pool.map(render, range(collect.locations), chunksize=4), start=1):
            features.extend(items)
            if done % step == 0 or done == collect.locations:
                log(f"scenes rendered for {done}/{collect.locations} locations")
    (root / "stac").mkdir(parents=True, exist_ok=True)
    (root / "stac" / "collection.json").write_text(json.dumps(collection_json()))
    items = root / "stac" / "items.json"
    items.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return items
