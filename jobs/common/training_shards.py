"""Training shards: the model's input, derived once from the collected record, read with no decoding.

A training shard is a tar file (WebDataset layout, so any tar or WebDataset reader opens it):

    __index__.json        every location's key, dates and the byte offset of each timestamp's member
    <key>.json            bands, dates, shape and the stretch the pixels went through
    <key>.t<k>.u8         timestamp k's input bands as raw uint8, shape (C, H, W), C-contiguous

Raw uint8 because the loader then only moves bytes: a sample is a memory copy of the timestamps it
draws out of a memory-mapped local file, so nothing is decoded on the CPU (benchmarks/pretrain.py
measures this beside JPEG). The index comes first and its offsets count from the end of its own
member, so a reader finds every timestamp with one 512-byte header read and one JSON parse, and a
shard's size is known before it is written. Nothing here assumes three bands.
"""

from __future__ import annotations

import io
import json
import mmap
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INDEX_MEMBER = "__index__.json"
BLOCK = tarfile.BLOCKSIZE
FORMAT = "secoctl-training-shard/1"
# Bounds a reader holds a shard's header to: a damaged or hostile file fails in one line.
MAX_INDEX_BYTES = 64 * 2**20
MAX_LOCATIONS = 1_000_000


@dataclass(frozen=True)
class Location:
    """One location's model input: (timestamps, C, H, W) uint8."""

    key: str
    pixels: np.ndarray
    metadata: dict[str, Any]


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _members(locations: list[Location]) -> list[tuple[str, bytes]]:
    members = []
    for location in locations:
        pixels = location.pixels
        if pixels.dtype != np.uint8 or pixels.ndim != 4:
            raise ValueError(f"{location.key}: training pixels must be uint8 (T, C, H, W), got "
                             f"{pixels.dtype} {pixels.shape}")
        members.append((f"{location.key}.json", json.dumps(location.metadata, sort_keys=True).encode()))
        members += [(f"{location.key}.t{t}.u8", np.ascontiguousarray(pixels[t]).tobytes())
                    for t in range(pixels.shape[0])]
    return members


def encode(locations: list[Location]) -> bytes:
    """One shard's bytes: the index member, then each location's members in order."""
    members = _members(locations)
    offsets: dict[str, int] = {}
    position = 0
    for name, payload in members:
        offsets[name] = position + BLOCK  # a USTAR header is one block; the data follows it
        position += BLOCK + _padded(len(payload))
    index = {"format": FORMAT, "locations": [
        {"key": loc.key, "shape": list(loc.pixels.shape[1:]),
         "offsets": [offsets[f"{loc.key}.t{t}.u8"] for t in range(loc.pixels.shape[0])]}
        for loc in locations]}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, payload in [(INDEX_MEMBER, json.dumps(index, separators=(",", ":")).encode()), *members]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


class TrainingShard:
    """A training shard on local disk, memory-mapped: `timestamp(i, t)` is a view, not a copy."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        with open(self.path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self.locations = self._read_index()
        except (ValueError, KeyError, TypeError, tarfile.TarError) as error:
            self._map.close()
            raise ValueError(f"{self.path}: not a training shard ({error})") from None
        self._bytes = np.frombuffer(self._map, dtype=np.uint8)

    def _read_index(self) -> list[dict[str, Any]]:
        header = tarfile.TarInfo.frombuf(self._map[:BLOCK], tarfile.ENCODING, "surrogateescape")
        if header.name != INDEX_MEMBER or not 0 < header.size <= MAX_INDEX_BYTES:
            raise ValueError(f"its first member must be {INDEX_MEMBER} of at most {MAX_INDEX_BYTES} bytes")
        index = json.loads(self._map[BLOCK:BLOCK + header.size])
        if index.get("format") != FORMAT or len(index["locations"]) > MAX_LOCATIONS:
            raise ValueError(f"format {index.get('format')!r}, expected {FORMAT!r}")
        data_start = BLOCK + _padded(header.size)
        locations = []
        for entry in index["locations"]:
            shape = tuple(int(n) for n in entry["shape"])
            size = int(np.prod(shape))
            offsets = [data_start + int(o) for o in entry["offsets"]]
            if len(shape) != 3 or not offsets or any(o < data_start or o + size > len(self._map) for o in offsets):
                raise ValueError(f"location {entry.get('key')!r} points outside the file")
            locations.append({"key": str(entry["key"]), "shape": shape, "size": size, "offsets": offsets})
        return locations

    def __len__(self) -> int:
        return len(self.locations)

    def timestamps(self, location: int) -> int:
        return len(self.locations[location]["offsets"])

    def timestamp(self, location: int, t: int) -> np.ndarray:
        entry = self.locations[location]
        start = entry["offsets"][t]
        return self._bytes[start:start + entry["size"]].reshape(entry["shape"])

    def location(self, location: int) -> np.ndarray:
        """(T, C, H, W): a copy, for tests and tools; the loader copies only the timestamps it draws."""
        return np.stack([self.timestamp(location, t) for t in range(self.timestamps(location))])
