"""The collected record's shards: WebDataset-layout tar files, one sample per location, as collect writes them.

A sample is `<key>.npy` (uint16 surface reflectance, shape timestamps × bands × H × W, the +1000
offset of processing baseline 04.00 already removed) and `<key>.json` (bands, dates, scene ids,
cloud cover, CRS, transform). Tar keeps a shard one sequential read from object storage, and any
WebDataset reader can open it. A shard is written whole or not at all. The shards stage derives the
model's input from these (jobs/common/training_shards.py).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from secoctl import store


@dataclass(frozen=True)
class Sample:
    key: str
    pixels: np.ndarray  # uint16, (timestamps, bands, height, width)
    metadata: dict[str, Any]


def _member(name: str, payload: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, io.BytesIO(payload)


def encode_shard(samples: Iterable[Sample]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for sample in samples:
            if sample.pixels.dtype != np.uint16 or sample.pixels.ndim != 4:
                raise ValueError(
                    f"{sample.key}: pixels must be uint16 (T, C, H, W), got {sample.pixels.dtype} {sample.pixels.shape}"
                )
            array = io.BytesIO()
            np.save(array, sample.pixels, allow_pickle=False)
            archive.addfile(*_member(f"{sample.key}.npy", array.getvalue()))
            archive.addfile(*_member(f"{sample.key}.json", json.dumps(sample.metadata, sort_keys=True).encode()))
    return buffer.getvalue()


def write_shard(uri: str, samples: list[Sample]) -> dict[str, Any]:
    """Commit a whole shard; returns its index entry."""
    store.write_bytes(uri, encode_shard(samples))
    return {"uri": uri, "samples": len(samples), "keys": [s.key for s in samples]}


def read_shard(uri: str) -> Iterator[Sample]:
    fs, path = store.filesystem(uri)
    with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as archive:
        pending: dict[str, dict[str, Any]] = {}
        for member in archive:
            key, _, extension = member.name.rpartition(".")
            payload = archive.extractfile(member).read()
            entry = pending.setdefault(key, {})
            if extension == "npy":
                entry["pixels"] = np.load(io.BytesIO(payload), allow_pickle=False)
            elif extension == "json":
                entry["metadata"] = json.loads(payload)
            if len(entry) == 2:
                del pending[key]
                yield Sample(key, entry["pixels"], entry["metadata"])
        if pending:
            raise ValueError(f"{uri}: incomplete samples {sorted(pending)}")


def shard_entries(index: dict[str, Any]) -> list[dict[str, Any]]:
    """Every shard a stage's index.json lists (each part's summary["shards"]: uri, samples, keys), sorted by uri:
    the collect stage's record shards, or the shards stage's training shards."""
    return sorted(
        (shard for part in index["parts"] for shard in part["summary"]["shards"]), key=lambda shard: shard["uri"]
    )
