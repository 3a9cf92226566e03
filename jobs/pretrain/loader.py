"""The pretrain input path on the CPU: training shards -> batches of drawn timestamps, bytes moved only.

Each rank is one reader. Per epoch the shards are put in a seeded order and dealt out by rank, so
no reader scans every shard (with fewer shards than ranks, ranks share a shard and take every
n-th location of it). A reader streams its shards in that order through the node's cache into a
shuffle buffer of (shard, location) handles: a batch mixes locations from many shards, and the
buffer holds references into memory-mapped files, not pixels. A sample is the timestamps its view
plan draws (jobs.pretrain.views), copied straight from the mapped file into the batch buffer;
everything else (crop, jitter, blur, normalisation) runs on the device in whole batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jobs.common.training_shards import DamagedShard, TrainingShard
from jobs.pretrain.shard_cache import ShardCache
from jobs.pretrain.views import VIEW_SLOTS, draw_slots

SHUFFLE_BUFFER = 4096  # locations; handles only, so its memory is a few hundred kB


@dataclass(frozen=True)
class ShardRef:
    uri: str
    samples: int


def reader_shards(sizes: list[int], readers: int, slot: int, epoch: int, seed: int) -> list[tuple[int, slice]]:
    """Which shards (and which of their locations) reader `slot` of `readers` reads in `epoch`."""
    order = np.random.default_rng([seed, epoch]).permutation(len(sizes))
    if len(sizes) >= readers:
        return [(int(i), slice(None)) for i in order[slot::readers]]
    column = slot % len(sizes)
    sharing = len(range(column, readers, len(sizes)))
    return [(int(order[column]), slice(slot // len(sizes), None, sharing))]


class SeasonalBatches:
    """Endless batches, uint8 (batch, slots, C, H, W), for one rank; epoch e visits every location once
    across all ranks."""

    def __init__(
        self,
        shards: list[ShardRef],
        method: str,
        batch: int,
        seed: int,
        rank: int,
        world_size: int,
        cache: ShardCache,
        first_epoch: int = 0,
        fetch_ahead: int = 4,
        buffer: int = SHUFFLE_BUFFER,
    ):
        self.shards, self.method, self.batch = shards, method, batch
        self.seed, self.rank, self.world_size, self.cache = seed, rank, world_size, cache
        self.first_epoch, self.fetch_ahead = first_epoch, max(fetch_ahead, 1)
        first = self._plan(first_epoch)
        per_epoch = sum(len(range(shards[i].samples)[part]) for i, part in first)
        if not per_epoch:
            raise RuntimeError(f"rank {rank} of {world_size} got no location: fewer locations than ranks")
        self.buffer = min(buffer, per_epoch)  # never the same location twice in the buffer
        probe = self._open(cache.path(shards[first[0][0]].uri))
        self.sample_shape = (max(VIEW_SLOTS[method]) + 1, *probe.shape)
        self.batch_shape = (batch, *self.sample_shape)
        self.read_locations = 0

    def _plan(self, epoch: int) -> list[tuple[int, slice]]:
        return reader_shards([s.samples for s in self.shards], self.world_size, self.rank, epoch, self.seed)

    def _open(self, path: Path) -> TrainingShard:
        """The shard mapped; from then on the cache may evict its file (the mapping stays valid)."""
        try:
            return TrainingShard(path)
        finally:
            self.cache.release(path)

    def _locations(self, pool: ThreadPoolExecutor) -> Iterator[tuple[TrainingShard, int]]:
        """Every (shard, location) this rank reads, epoch after epoch; the next shards fetched ahead."""
        epoch = self.first_epoch
        while True:
            plan = self._plan(epoch)
            pending: list[Future] = [
                pool.submit(self.cache.path, self.shards[i].uri) for i, _ in plan[: self.fetch_ahead]
            ]
            for number, (_, part) in enumerate(plan):
                if number + self.fetch_ahead < len(plan):
                    pending.append(pool.submit(self.cache.path, self.shards[plan[number + self.fetch_ahead][0]].uri))
                shard = self._open(pending[number].result())
                if shard.shape != self.sample_shape[1:]:
                    # a batch row takes one shape: numpy would broadcast a smaller one into it unnoticed
                    raise DamagedShard(
                        f"{shard.path}: not a training shard of this run (locations of shape "
                        f"{shard.shape}, the run's are {self.sample_shape[1:]})"
                    )
                for location in range(len(shard))[part]:
                    yield shard, location
            epoch += 1

    def __iter__(self) -> Iterator[tuple[TrainingShard, int]]:
        """Locations in shuffle-buffer order."""
        rng = np.random.default_rng([self.seed, self.first_epoch, self.rank, 1])
        held: list[tuple[TrainingShard, int]] = []
        with ThreadPoolExecutor(self.fetch_ahead, thread_name_prefix="shard-fetch") as pool:
            for handle in self._locations(pool):
                if len(held) < self.buffer:
                    held.append(handle)
                    continue
                pick = int(rng.integers(len(held)))
                held[pick], handle = handle, held[pick]
                yield handle

    def fill(self, out: np.ndarray, locations: Iterator[tuple[TrainingShard, int]], rng: np.random.Generator) -> None:
        """Copy one batch of drawn timestamps into `out` (batch, slots, C, H, W): the loader's only work."""
        for row in range(out.shape[0]):
            shard, location = next(locations)
            for column, t in enumerate(draw_slots(self.method, shard.timestamps(location), rng)):
                out[row, column] = shard.timestamp(location, t)
        self.read_locations += out.shape[0]

    def arrays(self) -> Iterator[np.ndarray]:
        """Fresh arrays, one per batch (for tools; training fills pinned buffers through `fill`)."""
        locations, rng = iter(self), self.rng()
        while True:
            out = np.empty(self.batch_shape, np.uint8)
            self.fill(out, locations, rng)
            yield out

    def rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.first_epoch, self.rank, 2])
