"""Ingesting the released SeCo-100K / SeCo-1M archives into the same shards as a STAC collection.

Layout: `<root>/<location:06d>/<scene id>/<band>.tif`, one single-band uint8 GeoTIFF per band at
its native resolution (264, 132 or 44 px), and the scene's `metadata.json`. Scene ids start with
the acquisition time (Earth Engine's `20200712T101031_...`), so name order is date order. The
archive quantised reflectance to uint8 over [0, 1]; shards hold reflectance × 10000 as uint16,
so values are scaled back (resolution lost in the release stays lost, and the metadata says so).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from jobs.collect.outcomes import Outcome
from jobs.common.shards import Sample
from secoctl import store
from secoctl.spec import Collect

UINT8_TO_REFLECTANCE = 10_000 / 255


def _names(fs, path: str, folders_only: bool = False) -> list[str]:
    entries = fs.ls(path, detail=False)
    return [e.rstrip("/").rsplit("/", 1)[-1] for e in entries if not folders_only or fs.isdir(e)]


def location_folders(root: str) -> list[str]:
    """Location folder names, sorted: their position is the candidate index workers slice."""
    fs, path = store.filesystem(root)
    if not fs.isdir(path):
        raise FileNotFoundError(
            f"collect.archivePath {root} is not a folder; extract the SeCo release "
            "(Zenodo record 4728033) and point archivePath at its root"
        )
    return sorted(name for name in _names(fs, path) if name.isdigit())


def band_file(names: set[str], band: str) -> str:
    """`B02` in our spec is `B2.tif` in the release; accept either spelling."""
    short = band[0] + band[1:].lstrip("0") if band[1:].isdigit() else band
    for candidate in (f"{band}.tif", f"{short}.tif"):
        if candidate in names:
            return candidate
    raise FileNotFoundError(f"no {band}.tif or {short}.tif")


def read_band(uri: str, size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The band resampled to `size` × `size` (bilinear up from 20 m and 60 m)."""
    import rasterio
    from rasterio.enums import Resampling

    fs, path = store.filesystem(uri)
    with fs.open(path, "rb") as handle, rasterio.open(handle) as dataset:
        values = dataset.read(1, out_shape=(size, size), resampling=Resampling.bilinear)
        return values, {"crs": str(dataset.crs), "transform": list(dataset.transform)[:6], "dtype": dataset.dtypes[0]}


def read_location(root: str, folder: str, collect: Collect) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The location's newest `timestamps` scenes, or None when it has fewer."""
    fs, path = store.filesystem(store.join(root, folder))
    scenes = sorted(_names(fs, path, folders_only=True), reverse=True)
    if len(scenes) < collect.timestamps:
        return None
    scenes = scenes[: collect.timestamps]
    cube = np.zeros((len(scenes), len(collect.bands), collect.patch_size, collect.patch_size), np.uint16)
    properties, geo = [], {}
    for t, scene in enumerate(scenes):
        scene_uri = store.join(root, folder, scene)
        names = set(_names(fs, f"{path}/{scene}"))
        properties.append(
            json.loads(store.read_text(store.join(scene_uri, "metadata.json"))) if "metadata.json" in names else {}
        )
        size = _ten_metre_size(scene_uri, names)
        for c, band in enumerate(collect.bands):
            full, geo = read_band(store.join(scene_uri, band_file(names, band)), size)
            if full.shape[0] < collect.patch_size:
                raise ValueError(
                    f"{scene_uri}: patches are {full.shape[0]} px at 10 m, the spec asks for "
                    f"patchSize {collect.patch_size}"
                )
            start = (full.shape[0] - collect.patch_size) // 2
            crop = full[start : start + collect.patch_size, start : start + collect.patch_size].astype(np.float32)
            cube[t, c] = np.rint(crop * UINT8_TO_REFLECTANCE if geo["dtype"] == "uint8" else crop).astype(np.uint16)
    metadata = {
        "location": int(folder),
        "bands": list(collect.bands),
        "scene_ids": scenes,
        "dates": [s.split("_", 1)[0] for s in scenes],
        "cloud_cover": [p.get("CLOUDY_PIXEL_PERCENTAGE") for p in properties],
        "crs": geo.get("crs"),
        "transform": geo.get("transform"),
        "source": "seco-archive",
        "quantised": geo.get("dtype") == "uint8",
    }
    return cube, metadata


def _ten_metre_size(scene_uri: str, names: set[str]) -> int:
    """Side in pixels of the scene's 10 m bands (B2/B02), which every band is resampled to."""
    import rasterio

    fs, path = store.filesystem(store.join(scene_uri, band_file(names, "B02")))
    with fs.open(path, "rb") as handle, rasterio.open(handle) as dataset:
        return dataset.width


def archive_fetcher(collect: Collect, folders: list[str]) -> Callable[[int], Outcome]:
    root = collect.archive_path

    def fetch(index: int) -> Outcome:
        result = read_location(root, folders[index], collect)
        if result is None:
            return Outcome(index, "dropped_no_scene")
        pixels, metadata = result
        return Outcome(index, "accepted", Sample(folders[index], pixels, metadata))

    return fetch
