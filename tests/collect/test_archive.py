"""`source: seco-archive` reads the released SeCo folder layout into the same shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from jobs.common.shards import read_shard, shard_entries
from secoctl.spec.file import load_documents
from tests.collect.conftest import run_collect

SIZES = {"B2": 48, "B3": 48, "B4": 48, "B5": 24}  # 10 m and 20 m bands at their native sizes


def make_release(root: Path, scenes_per_location: list[int]) -> dict[tuple[str, str, str], np.ndarray]:
    """`<root>/<location:06d>/<scene id>/<band>.tif` (uint8, lat/long) and metadata.json, as released."""
    rng = np.random.default_rng(0)
    written = {}
    for location, count in enumerate(scenes_per_location):
        for k in range(count):
            scene = f"2020{12 - 2 * k:02d}01T101031_2020{12 - 2 * k:02d}01T101653_T32TQM"
            folder = root / f"{location:06d}" / scene
            folder.mkdir(parents=True)
            (folder / "metadata.json").write_text(json.dumps({"CLOUDY_PIXEL_PERCENTAGE": float(k)}))
            for band, size in SIZES.items():
                values = rng.integers(1, 255, (size, size), dtype=np.uint8)
                with rasterio.open(
                    folder / f"{band}.tif",
                    "w",
                    driver="GTiff",
                    width=size,
                    height=size,
                    count=1,
                    dtype="uint8",
                    crs="EPSG:4326",
                    transform=from_origin(11.0, 46.0, 1e-4 * 48 / size, 1e-4 * 48 / size),
                ) as out:
                    out.write(values, 1)
                written[(f"{location:06d}", scene, band)] = values
    return written


def test_archive_locations_become_shards_and_short_ones_are_dropped(tmp_path: Path, storage: Path):
    written = make_release(tmp_path / "seco-100k", [5, 4, 6])
    experiment = load_documents(
        f"""
apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {{name: archive-test}}
spec:
  collect: {{source: seco-archive, archivePath: "{tmp_path / "seco-100k"}", patchSize: 32,
            bands: [B02, B03, B04, B05], samplesPerShard: 2, workers: 2}}
  pretrain: {{backbone: resnet18, nodes: 1, gpusPerNode: 0, batchSize: 16}}
""",
        "archive.yaml",
    )[0]
    index = run_collect(experiment, storage)
    samples = {s.key: s for entry in shard_entries(index) for s in read_shard(entry["uri"])}
    assert sorted(samples) == ["000000", "000002"]
    assert sum(p["summary"]["locations"]["dropped_no_scene"] for p in index["parts"]) == 1
    newest_first = samples["000002"].metadata["scene_ids"]
    assert newest_first == sorted(newest_first, reverse=True) and len(newest_first) == 5
    red = written[("000002", newest_first[0], "B4")][8:40, 8:40]
    np.testing.assert_array_equal(
        samples["000002"].pixels[0, 2], np.rint(red.astype(np.float32) * np.float32(10_000 / 255)).astype(np.uint16)
    )
    assert samples["000002"].pixels.shape == (5, 4, 32, 32) and samples["000002"].metadata["quantised"]
