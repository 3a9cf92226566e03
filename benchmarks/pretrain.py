"""SeCo training-step throughput: this stage's step against the reference code's way of training.

    python -m benchmarks.pretrain [--device cuda] [--batch N] [--steps N]

(a) this stage: uint8 view stacks moved to the device, batched augmentation there (kornia),
    channels_last, bf16 autocast on CUDA.
(b) baseline, as the reference trains: per-sample torchvision augmentation on the CPU in
    DataLoader workers, fp32, NCHW.
Both run the same SeCo model (three sub-spaces, four views) at the paper's 224 px input from
264 px patches. The last line is JSON; on CUDA it adds the fraction of the device's measured bf16
matrix-multiply rate that the step achieves (FLOPs counted by torch, not assumed).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision.transforms import v2 as T

from jobs.pretrain.augment import IMAGENET_MEAN, IMAGENET_STD, BatchAugment
from jobs.pretrain.seco import SeCo
from jobs.pretrain.views import AUGMENTED as SECO_VIEWS

PATCH, INPUT = 264, 224
AUGMENTED = SECO_VIEWS["seco"]
VIEWS = len(AUGMENTED)


class UInt8Views(Dataset):
    def __init__(self, samples: int):
        self.data = np.random.default_rng(0).integers(0, 256, (samples, VIEWS, 3, PATCH, PATCH), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.data[index])


class PerSampleCPUAugment(UInt8Views):
    """The reference's pipeline: every view of every sample transformed on its own on the CPU."""

    def __init__(self, samples: int):
        super().__init__(samples)
        crop = [T.RandomResizedCrop(INPUT, scale=(0.2, 1.0), antialias=True)]
        artificial = [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
                      T.RandomApply([T.GaussianBlur(23, (0.1, 2.0))], p=0.5), T.RandomHorizontalFlip()]
        finish = [T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        self.plain = T.Compose(crop + finish)
        self.augmented = T.Compose(crop + artificial + finish)

    def __getitem__(self, index: int) -> torch.Tensor:
        views = torch.from_numpy(self.data[index])
        return torch.stack([(self.augmented if a else self.plain)(v) for v, a in zip(views, AUGMENTED)])


def _model(backbone: str, device: torch.device, channels_last: bool, batch: int) -> SeCo:
    model = SeCo(backbone, 3, queue_size=batch * 8).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _optimizer(model: SeCo) -> torch.optim.Optimizer:
    return torch.optim.SGD([*model.encoder_q.parameters(), *model.heads_q.parameters()], lr=0.03, momentum=0.9)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train(model, optimizer, batches, device, steps, warmup, prepare, bf16) -> float:
    """Samples per second over `steps` after `warmup` steps."""
    iterator = iter(batches)
    started, samples = 0.0, 0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            started, samples = time.perf_counter(), 0
        query, *keys = prepare(next(iterator))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model(query, keys)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        samples += query.shape[0]
    _sync(device)
    return samples / (time.perf_counter() - started)


def _cycle(loader):
    while True:
        yield from loader


def stage_step(backbone: str, device: torch.device, batch: int, steps: int, warmup: int, workers: int) -> float:
    model = _model(backbone, device, True, batch)
    augment = BatchAugment(INPUT, AUGMENTED, False, tuple(range(VIEWS))).to(device)
    loader = DataLoader(UInt8Views(batch * 4), batch_size=batch, num_workers=workers, shuffle=True,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=True)
    return _train(model, _optimizer(model), _cycle(loader), device, steps, warmup,
                  lambda views: augment(views.to(device, non_blocking=True)), device.type == "cuda")


def baseline_step(backbone: str, device: torch.device, batch: int, steps: int, warmup: int, workers: int) -> float:
    model = _model(backbone, device, False, batch)
    loader = DataLoader(PerSampleCPUAugment(batch * 4), batch_size=batch, num_workers=workers, shuffle=True,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=True)
    return _train(model, _optimizer(model), _cycle(loader), device, steps, warmup,
                  lambda views: [v.to(device, non_blocking=True) for v in views.unbind(1)], False)


def flops_per_sample(backbone: str, device: torch.device) -> float:
    """Forward and backward FLOPs of one SeCo step, counted by torch on a batch of 2."""
    model = _model(backbone, device, False, 2)
    views = [torch.randn(2, 3, INPUT, INPUT, device=device) for _ in range(VIEWS)]
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(views[0], views[1:])
        loss.backward()
    return counter.get_total_flops() / 2


def bf16_matmul_rate(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="per step; default 128 on CUDA, 4 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps; default 20 on CUDA, 2 on CPU")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 16))
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (128 if cuda else 4)
    steps = args.steps or (20 if cuda else 2)
    warmup = 3 if cuda else 1
    result: dict = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "batch": batch,
                    "steps": steps, "workers": args.workers, "input": INPUT, "torch": torch.__version__}
    rate = bf16_matmul_rate(device) if cuda else None
    if rate:
        result["bf16_matmul_tflops"] = round(rate / 1e12, 1)
    for backbone in args.backbones:
        torch.manual_seed(0)
        fast = stage_step(backbone, device, batch, steps, warmup, args.workers)
        slow = baseline_step(backbone, device, batch, steps, warmup, args.workers)
        entry = {"samples_per_s": round(fast, 2), "baseline_samples_per_s": round(slow, 2),
                 "speedup": round(fast / slow, 2)}
        if rate:
            entry["fraction_of_bf16_matmul_rate"] = round(fast * flops_per_sample(backbone, device) / rate, 3)
        result[backbone] = entry
        print(f"{backbone}: {entry}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
