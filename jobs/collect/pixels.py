"""Reading a location's patch at every date with stackstac: uint16, 10 m, in the scene's UTM zone."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np
import pystac

from jobs.collect.sampling import Location
from secoctl.spec import Collect

# GDAL settings for many small windowed reads of remote COGs: read the header in one request,
# never list directories, merge neighbouring ranges, retry 429/5xx with backoff, cache per file.
# Multi-range reads go one range after another: GDAL 3.10's parallel ReadMultiRange does not retry
# a 429 (OSGeo/gdal#12933; fixed later by #13898), and the serial path does.
GDAL_ALWAYS = {
    "GDAL_HTTP_MULTIRANGE": "SERIAL",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF",
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
    "CPL_VSIL_CURL_USE_HEAD": "NO",  # the first ranged GET tells the size: one round trip saved per file
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",  # doubled at each retry; GDAL 3.10 does not read Retry-After
    "GDAL_HTTP_RETRY_CODES": "429,500,502,503,504",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "CPL_VSIL_CURL_CHUNK_SIZE": "65536",
    "VSI_CACHE": "TRUE",
}


@functools.cache
def _gdal_library() -> ctypes.CDLL | None:
    """The libgdal rasterio loaded (its wheel bundles one), for the cache call rasterio does not expose."""
    import rasterio

    bundled = sorted(Path(rasterio.__file__).parent.parent.glob("rasterio.libs/libgdal*.so*"))
    name = str(bundled[0]) if bundled else ctypes.util.find_library("gdal")
    return ctypes.CDLL(name) if name else None


def forget_cached(hrefs: list[str]) -> None:
    """Drop GDAL's /vsicurl/ cache of these files: a cut or failed response must not be served again."""
    library = _gdal_library()
    if library is not None:
        for href in hrefs:
            library.VSICurlPartialClearCache(f"/vsicurl/{href}".encode())


def gdal_env():
    import stackstac

    return stackstac.LayeredEnv(always=GDAL_ALWAYS)


def utm_epsg(item: pystac.Item) -> int:
    code = item.properties.get("proj:epsg") or int(str(item.properties["proj:code"]).split(":")[1])
    return int(code)


@functools.lru_cache(maxsize=128)
def from_lonlat(epsg: int):
    """A cached lon/lat → EPSG transformer (building one costs milliseconds)."""
    from pyproj import Transformer

    return Transformer.from_crs(4326, epsg, always_xy=True)


def patch_bounds(location: Location, epsg: int, patch_size: int) -> tuple[float, float, float, float]:
    """A patch_size × patch_size square of 10 m pixels centred on the location, on the 10 m grid."""
    x, y = from_lonlat(epsg).transform(location.lon, location.lat)
    left = math.floor(x / 10 - patch_size / 2) * 10.0
    bottom = math.floor(y / 10 - patch_size / 2) * 10.0
    return left, bottom, left + patch_size * 10.0, bottom + patch_size * 10.0


def processing_offset(item: pystac.Item) -> int:
    """DN offset of processing baseline 04.00 and later (Sentinel-2 L2A from 2022-01-25)."""
    baseline = str(item.properties.get("s2:processing_baseline", "00.00"))
    return 1000 if tuple(int(p) for p in baseline.split(".")) >= (4, 0) else 0


def harmonise(pixels: np.ndarray, offsets: list[int]) -> np.ndarray:
    """Remove the +1000 per date; pixels at or below the offset become 0 (nodata), as in ESA's L2A."""
    out = pixels.copy()
    for position, offset in enumerate(offsets):
        if offset:
            layer = out[position]
            layer[:] = np.where(layer > offset, layer - offset, 0)
    return out


def read_patch(
    items: list[pystac.Item], location: Location, collect: Collect, reads: Executor
) -> tuple[np.ndarray, dict[str, Any]]:
    """(dates, bands, patch, patch) uint16 reflectance × 10000 and the sample's metadata; the COG reads run on
    `reads`."""
    import stackstac
    from rasterio.enums import Resampling

    epsg = utm_epsg(items[0])
    bounds = patch_bounds(location, epsg, collect.patch_size)
    stack = stackstac.stack(
        items,
        assets=list(collect.bands),
        epsg=epsg,
        resolution=10,
        bounds=bounds,
        snap_bounds=False,
        resampling=Resampling.nearest,
        chunksize=collect.patch_size,
        dtype=np.dtype("uint16"),
        fill_value=np.uint16(0),
        rescale=False,
        sortby_date=False,
        properties=False,
        band_coords=False,
        xy_coords=False,
        gdal_env=gdal_env(),
        errors_as_nodata=(),
    )
    try:
        # Passed to this compute, not through dask.config: that config is one per process, and parts read at once.
        raw = np.asarray(stack.data.compute(scheduler="threads", pool=reads))
    except Exception:
        forget_cached([item.assets[band].href for item in items for band in collect.bands])
        raise
    if raw.shape != (len(items), len(collect.bands), collect.patch_size, collect.patch_size):
        raise ValueError(
            f"location {location.index}: read shape {raw.shape}, expected "
            f"{(len(items), len(collect.bands), collect.patch_size, collect.patch_size)}"
        )
    offsets = [processing_offset(item) for item in items]
    metadata = {
        "location": location.index,
        "lon": location.lon,
        "lat": location.lat,
        "city": location.city,
        "bands": list(collect.bands),
        "dates": [item.datetime.isoformat() for item in items],
        "target_dates": [d.isoformat() for d in location.dates],
        "scene_ids": [item.id for item in items],
        "cloud_cover": [item.properties.get("eo:cloud_cover") for item in items],
        "processing_baselines": [item.properties.get("s2:processing_baseline") for item in items],
        "offsets_removed": offsets,
        "crs": f"EPSG:{epsg}",
        "transform": [10.0, 0.0, bounds[0], 0.0, -10.0, bounds[3]],
    }
    return harmonise(raw, offsets), metadata
