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
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INDEX_MEMBER = "__index__.json"
BLOCK = tarfile.BLOCKSIZE
FORMAT = "secoctl-training-shard/1"
# Bounds a reader holds a shard's index to, so a damaged or hostile file fails in one line before it
# costs memory: a real index takes ~250 bytes and ~20 JSON values a location, and a shard holds at most
# spec.collect.samplesPerShard (100,000) locations.
MAX_INDEX_BYTES = 16 * 2**20
MAX_INDEX_VALUES = 2_000_000  # commas and colons: json.loads makes about one object for each
MAX_LOCATIONS = 100_000
MAX_TIMESTAMPS = 64


class DamagedShard(ValueError):
    """A file that is not a training shard this run can read: its message is one line naming the file."""


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
            raise ValueError(
                f"{location.key}: training pixels must be uint8 (T, C, H, W), got {pixels.dtype} {pixels.shape}"
            )
        members.append((f"{location.key}.json", json.dumps(location.metadata, sort_keys=True).encode()))
        members += [
            (f"{location.key}.t{t}.u8", np.ascontiguousarray(pixels[t]).tobytes()) for t in range(pixels.shape[0])
        ]
    return members


def encode(locations: list[Location]) -> bytes:
    """One shard's bytes: the index member, then each location's members in order."""
    members = _members(locations)
    offsets: dict[str, int] = {}
    position = 0
    for name, payload in members:
        offsets[name] = position + BLOCK  # a USTAR header is one block; the data follows it
        position += BLOCK + _padded(len(payload))
    index = {
        "format": FORMAT,
        "locations": [
            {
                "key": loc.key,
                "shape": list(loc.pixels.shape[1:]),
                "offsets": [offsets[f"{loc.key}.t{t}.u8"] for t in range(loc.pixels.shape[0])],
            }
            for loc in locations
        ],
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, payload in [(INDEX_MEMBER, json.dumps(index, separators=(",", ":")).encode()), *members]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


class TrainingShard:
    """A training shard on local disk, memory-mapped: `timestamp(i, t)` is a view, not a copy.

    Every location of a shard has one (C, H, W) shape, `shape`; each timestamp's offset must land on the
    data of a tar member named `<key>.t<k>.u8` whose header gives exactly that many bytes.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        with open(self.path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 2 * BLOCK:
                raise DamagedShard(f"{self.path}: not a training shard ({size} bytes, shorter than a tar header)")
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self.locations = self._read_index()
        except (
            ValueError,
            KeyError,
            TypeError,
            IndexError,
            OverflowError,
            RecursionError,
            MemoryError,
            UnicodeDecodeError,
            tarfile.TarError,
        ) as error:
            self._map.close()
            reason = " ".join(str(error).split())[:200] or type(error).__name__
            raise DamagedShard(f"{self.path}: not a training shard ({reason})") from None
        self.shape: tuple[int, int, int] = self.locations[0]["shape"] if self.locations else (0, 0, 0)
        self._bytes = np.frombuffer(self._map, dtype=np.uint8)

    def _read_index(self) -> list[dict[str, Any]]:
        header = tarfile.TarInfo.frombuf(self._map[:BLOCK], tarfile.ENCODING, "surrogateescape")
        if header.name != INDEX_MEMBER or not 0 < header.size <= MAX_INDEX_BYTES:
            raise ValueError(f"its first member must be {INDEX_MEMBER} of at most {MAX_INDEX_BYTES} bytes")
        raw = self._map[BLOCK : BLOCK + header.size]
        if raw.count(b",") + raw.count(b":") > MAX_INDEX_VALUES:
            raise ValueError(f"its index holds more than {MAX_INDEX_VALUES} values")
        index = json.loads(raw)
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            found = index.get("format") if isinstance(index, dict) else type(index).__name__
            raise ValueError(f"format {_short(found)}, expected {FORMAT!r}")
        entries = index.get("locations")
        if not isinstance(entries, list) or not 0 < len(entries) <= MAX_LOCATIONS:
            raise ValueError(f"its index needs 1 to {MAX_LOCATIONS} locations")
        data_start = BLOCK + _padded(header.size)
        locations = [self._location(entry, data_start) for entry in entries]
        shapes = {location["shape"] for location in locations}
        if len(shapes) > 1:
            raise ValueError(f"its locations differ in shape: {sorted(shapes)[:2]}")
        return locations

    def _location(self, entry: Any, data_start: int) -> dict[str, Any]:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ValueError(f"an index entry is not a location: {_short(entry)}")
        key, shape, offsets = entry["key"], entry.get("shape"), entry.get("offsets")
        if not (isinstance(shape, list) and len(shape) == 3 and all(_count(n) and n > 0 for n in shape)):
            raise ValueError(f"location {_short(key)}: shape {_short(shape)} is not three positive integers")
        if not (isinstance(offsets, list) and 0 < len(offsets) <= MAX_TIMESTAMPS and all(map(_count, offsets))):
            raise ValueError(
                f"location {_short(key)}: offsets {_short(offsets)} are not 1 to {MAX_TIMESTAMPS} byte offsets"
            )
        size = shape[0] * shape[1] * shape[2]
        starts = [data_start + o for o in offsets]
        for t, start in enumerate(starts):
            if start < data_start + BLOCK or start + size > len(self._map):
                raise ValueError(f"location {_short(key)} points outside the file")
            member = tarfile.TarInfo.frombuf(self._map[start - BLOCK : start], tarfile.ENCODING, "surrogateescape")
            if member.name != f"{key}.t{t}.u8" or member.size != size:
                raise ValueError(
                    f"location {_short(key)}: timestamp {t} of shape {tuple(shape)} is not the member "
                    f"there ({_short(member.name)}, {member.size} bytes)"
                )
        return {"key": key, "shape": tuple(shape), "size": size, "offsets": starts}

    def __len__(self) -> int:
        return len(self.locations)

    def timestamps(self, location: int) -> int:
        return len(self.locations[location]["offsets"])

    def timestamp(self, location: int, t: int) -> np.ndarray:
        entry = self.locations[location]
        start = entry["offsets"][t]
        return self._bytes[start : start + entry["size"]].reshape(entry["shape"])

    def location(self, location: int) -> np.ndarray:
        """(T, C, H, W): a copy, for tests and tools; the loader copies only the timestamps it draws."""
        return np.stack([self.timestamp(location, t) for t in range(self.timestamps(location))])


def _count(value: Any) -> bool:
    """A JSON integer that fits a byte offset (not a bool, not a float, not 10**400)."""
    return type(value) is int and 0 <= value < 2**48


def _short(value: Any) -> str:
    """A value from a damaged index, as one bounded line."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."
