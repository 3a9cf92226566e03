"""Batches onto the device while the step runs: a loader thread fills pinned buffers, a side stream copies.

A ring of `depth` slots, each a host buffer (pinned on CUDA) and a device buffer. The thread takes a
free slot, waits until that slot's last host-to-device copy is done (it alone blocks), fills the host
buffer, and queues the copy on a side stream behind the event that says the step has taken the
device buffer's previous batch. `next()` makes the compute stream wait for the copy on the device,
never the host: no host sync per step. The CPU work is only the copy of bytes (jobs.pretrain.loader).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import torch

from jobs.pretrain.loader import SeasonalBatches


class DeviceFeed:
    def __init__(self, batches: SeasonalBatches, device: torch.device, depth: int = 3):
        self.device, self.cuda = device, device.type == "cuda"
        shape = batches.batch_shape
        self._host = [torch.empty(shape, dtype=torch.uint8, pin_memory=self.cuda) for _ in range(depth)]
        # On the CPU the host buffers are the batches: nothing to copy.
        self._device = (
            [torch.empty(shape, dtype=torch.uint8, device=device) for _ in range(depth)] if self.cuda else self._host
        )
        self._copied = [torch.cuda.Event() for _ in range(depth)] if self.cuda else []
        self._taken = [torch.cuda.Event() for _ in range(depth)] if self.cuda else []
        self._stream = torch.cuda.Stream(device) if self.cuda else None
        self._free: queue.Queue[int] = queue.Queue()
        self._ready: queue.Queue[Any] = queue.Queue()
        for slot in range(depth):
            self._free.put(slot)
        self._previous: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(batches,), name="pretrain-loader", daemon=True)
        self._thread.start()

    def _run(self, batches: SeasonalBatches) -> None:
        try:
            locations, rng = iter(batches), batches.rng()
            while not self._stop.is_set():
                slot = self._free.get()
                if slot < 0:
                    return
                if self.cuda:
                    self._copied[slot].synchronize()  # the host buffer's previous copy has left it
                batches.fill(self._host[slot].numpy(), locations, rng)
                if self.cuda:
                    with torch.cuda.stream(self._stream):
                        self._stream.wait_event(self._taken[slot])
                        self._device[slot].copy_(self._host[slot], non_blocking=True)
                        self._copied[slot].record(self._stream)
                self._ready.put(slot)
        except BaseException as error:  # handed to the training loop, which raises it
            self._ready.put(error)

    def next(self) -> torch.Tensor:
        """The next batch on the device: uint8 (batch, slots, C, H, W). The batch returned before this
        one is handed back to the loader (the step that used it has been queued by now)."""
        if self._previous is not None:
            if self.cuda:
                self._taken[self._previous].record(torch.cuda.current_stream(self.device))
            self._free.put(self._previous)
        item = self._ready.get()
        if isinstance(item, BaseException):
            raise item
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_event(self._copied[item])
        self._previous = item
        return self._device[item]

    def close(self) -> None:
        self._stop.set()
        self._free.put(-1)
        self._thread.join(timeout=10)
