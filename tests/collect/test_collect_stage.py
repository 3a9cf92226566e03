"""The collect stage against a real STAC API and COG server on 127.0.0.1, faults injected between."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import from_bounds
from shapely.geometry import Point, shape

from jobs.common.shards import read_shard, shard_entries
from jobs.localcloud.cloud import serve
from jobs.localcloud.servers import fault_report
from jobs.localcloud.world import scene_folder
from secoctl import store
from secoctl.stored import named_stage_tree
from tests.collect.conftest import expected_outcomes, experiment_for, run_collect

COG_FAULTS = [
    {"path": r"/B03\.tif", "action": "status", "status": 429, "retry_after": 1, "times": 3},
    {"path": r"/B02\.tif", "action": "status", "status": 500, "times": 3},
    {"path": r"/B08\.tif", "action": "cut", "times": 2},
]
STAC_FAULTS = [
    {"path": r"^/search", "action": "status", "status": 429, "retry_after": 1, "times": 2},
    {"path": r"^/search", "action": "status", "status": 503, "times": 2},
    {"path": r"^/search", "action": "cut", "times": 1},
]


def totals(index: dict) -> dict[str, int]:
    keys = ("candidates", "accepted", "dropped_overlap", "dropped_no_scene", "failed")
    return {k: sum(part["summary"]["locations"][k] for part in index["parts"]) for k in keys}


def test_every_good_location_once_bad_ones_counted_under_faults(world_folder: Path, storage: Path):
    with serve(world_folder, latency_ms=20, stac_faults=STAC_FAULTS, cog_faults=COG_FAULTS) as cloud:
        experiment = experiment_for(cloud.stac_url)
        index = run_collect(experiment, storage)
        fired = {"stac": fault_report(cloud.stac_proxy), "cogs": fault_report(cloud.cog_proxy)}
    for side in fired.values():
        assert all(
            rule["fired"] == rule_spec["times"]
            for rule, rule_spec in zip(side["rules"], STAC_FAULTS if side is fired["stac"] else COG_FAULTS)
        ), fired

    expected = expected_outcomes(experiment.spec.collect)
    keys = [sample.key for entry in shard_entries(index) for sample in read_shard(entry["uri"])]
    assert len(keys) == len(set(keys))  # no location twice
    assert {int(k) for k in keys} == expected["accepted"]
    assert totals(index) == {"candidates": 12, **{k: len(v) for k, v in expected.items()}}
    failures = [f for part in index["parts"] for f in part["summary"]["failures"]]
    assert [f["location"] for f in failures] == sorted(expected["failed"])
    assert "B04" in failures[0]["error"]


def _scene_red(world_folder: Path, scene: str, crs: str, transform: list[float]) -> np.ndarray:
    """The scene's red band on the patch's grid: its own pixels, or reprojected (nearest) from the next UTM zone."""
    with rasterio.open(scene_folder(world_folder, scene) / "B04.tif") as source:
        if source.crs.to_string() == crs:
            left, top = transform[2], transform[5]
            return source.read(1, window=from_bounds(left, top - 320, left + 320, top, transform=source.transform))
        with WarpedVRT(
            source, crs=crs, transform=Affine(*transform), width=32, height=32, resampling=Resampling.nearest
        ) as warped:
            return warped.read(1)


def test_shards_hold_the_scenes_pixels_as_real_items_shape_them(world_folder: Path, storage: Path):
    items = {f["id"]: f for f in json.loads((world_folder / "stac" / "items.json").read_text())["features"]}
    with serve(world_folder) as cloud:
        index = run_collect(experiment_for(cloud.stac_url), storage)
    seen = {"offsets": set(), "other_zone": 0, "partial": 0}
    for entry in shard_entries(index):
        for sample in read_shard(entry["uri"]):
            meta = sample.metadata
            assert sample.pixels.dtype == np.uint16 and sample.pixels.shape == (5, 4, 32, 32)
            for t, scene in enumerate(meta["scene_ids"]):
                properties = items[scene]["properties"]
                # the chosen scene's data polygon holds the location, though a clearer partial one was on offer
                assert shape(items[scene]["geometry"]).contains(Point(meta["lon"], meta["lat"]))
                seen["partial"] += properties["s2:nodata_pixel_percentage"] > 0
                seen["other_zone"] += f"EPSG:{properties['proj:epsg']}" != meta["crs"]
                old = meta["dates"][t] < "2022-01-25"
                seen["offsets"].add((old, meta["processing_baselines"][t], meta["offsets_removed"][t]))
                digital = _scene_red(world_folder, scene, meta["crs"], meta["transform"]).astype(np.int32)
                expected = np.where(digital > meta["offsets_removed"][t], digital - meta["offsets_removed"][t], 0)
                np.testing.assert_array_equal(sample.pixels[t, meta["bands"].index("B04")], expected)
            assert max(meta["cloud_cover"]) <= 10.0
    # the baseline, not the date, decides the offset: old scenes reprocessed to 05.00 carry it too
    assert seen["offsets"] == {(True, "03.01", 0), (True, "05.00", 1000), (False, "05.09", 1000)}
    assert seen["other_zone"] > 0 and seen["partial"] > 0


def _shard_digests(index: dict, storage: Path) -> dict[str, str]:
    return {
        entry["uri"].removeprefix(storage.as_uri()): hashlib.sha256(store.read_bytes(entry["uri"])).hexdigest()
        for entry in shard_entries(index)
    }


def test_a_worker_killed_mid_run_resumes_to_the_uninterrupted_result(world_folder: Path, tmp_path: Path):
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    with serve(world_folder, latency_ms=60) as cloud:
        experiment = experiment_for(cloud.stac_url, per_shard=2, workers=1, in_flight=2)
        reference = run_collect(experiment, clean)

        from secoctl.backends.local.executor import LocalExecutor

        executor = LocalExecutor(resumed.as_uri())
        stored = executor.prepare(experiment)
        spec_uri = store.join(executor.location(stored), "spec.yaml")
        collected = Path(named_stage_tree(stored, "collect").uri.removeprefix("file://"))
        chunks = collected / "chunks"
        worker = subprocess.Popen(
            [sys.executable, "-m", "jobs.collect", "--spec", spec_uri],
            env={**os.environ, "JOB_COMPLETION_INDEX": "0", "SECOCTL_PARTS": "1"},
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while not (chunks.exists() and len(list(chunks.iterdir())) >= 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        interrupted_at = len(list(chunks.iterdir()))
        assert 2 <= interrupted_at < 6, "the worker should be killed mid-run"
        assert not (collected / "parts").exists()
        index = run_collect(experiment, resumed)

    def strip(idx):
        return [{**p["summary"], "shards": [{**s, "uri": None} for s in p["summary"]["shards"]]} for p in idx["parts"]]

    assert strip(index) == strip(reference)
    assert _shard_digests(index, resumed) == _shard_digests(reference, clean)
