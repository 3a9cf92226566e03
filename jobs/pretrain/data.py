"""An endless stream of SeCo view stacks from the collect stage's shards, split by rank and worker."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from jobs.common.shards import Sample, read_shard
from jobs.pretrain.views import plan_views, rgb_uint8, select_views


class SeasonalStream(IterableDataset):
    """Yields uint8 (views, 3, H, W). Epoch e visits every sample once across all ranks and workers.

    Shards are dealt out whole when there are enough of them; otherwise every reader scans all
    shards and keeps every n-th sample, so no rank or worker is ever left without data.
    """

    def __init__(self, shards: list[str], method: str, seed: int, rank: int, world_size: int, first_epoch: int = 0):
        self.shards, self.method = shards, method
        self.seed, self.rank, self.world_size, self.first_epoch = seed, rank, world_size, first_epoch

    def _samples(self, epoch: int, slot: int, readers: int) -> Iterator[Sample]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        shards = [self.shards[i] for i in order]
        if len(shards) >= readers:
            for uri in shards[slot::readers]:
                for sample in read_shard(uri):
                    yield sample
            return
        position = 0
        for uri in shards:
            for sample in read_shard(uri):
                if position % readers == slot:
                    yield sample
                position += 1

    def __iter__(self) -> Iterator[torch.Tensor]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        readers, slot = self.world_size * workers, self.rank * workers + worker_id
        epoch = self.first_epoch
        while True:
            rng = np.random.default_rng([self.seed, epoch, slot])
            yielded = 0
            for sample in self._samples(epoch, slot, readers):
                rgb = rgb_uint8(sample.pixels, sample.metadata["bands"])
                plan = plan_views(self.method, rgb.shape[0], rng)
                yielded += 1
                yield torch.from_numpy(select_views(rgb, plan))
            if not yielded:
                raise RuntimeError(f"reader {slot} of {readers} got no sample: fewer samples than "
                                   "ranks × loaderWorkers; lower loaderWorkers")
            epoch += 1
