"""The pretrain stage: SeCo or MoCo-v2 on the collect stage's shards, one process per GPU under torchrun.

The same code runs on CPU (gloo, fp32) for tests and the embedded executor, and on GPUs (NCCL,
bf16 autocast, channels_last, batched GPU augmentation) in pods.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from jobs.common.part import Part
from jobs.common.shards import shard_entries
from jobs.pretrain import checkpoints
from jobs.pretrain.augment import BatchAugment
from jobs.pretrain.data import SeasonalStream
from jobs.pretrain.seco import SeCo, subspaces_for
from jobs.pretrain.views import AUGMENTED, augments_before_crop
from secoctl import store

LOG_EVERY_STEPS = 10


def _setup() -> tuple[int, int, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def work(part: Part) -> dict[str, Any]:
    spec = part.experiment.spec.pretrain
    rank, world_size, device = _setup()
    if spec.batch_size % world_size:
        raise SystemExit(f"spec.pretrain.batchSize {spec.batch_size} is not divisible by {world_size} processes")
    entries = shard_entries(store.read_json(part.stage_tree("collect").index))
    shards = [entry["uri"] for entry in entries]
    total_samples = sum(entry["samples"] for entry in entries)
    steps_per_epoch = max(total_samples // spec.batch_size, 1)
    total_steps = spec.max_steps or spec.epochs * steps_per_epoch
    milestones = [m * steps_per_epoch for m in spec.lr_milestones]
    checkpoint_dir = part.tree.path("checkpoints")

    torch.manual_seed(spec.seed)  # the same initial weights on every rank
    model = SeCo(spec.backbone, subspaces_for(spec.method), spec.embedding_dim, spec.queue_size,
                 spec.encoder_momentum, spec.temperature).to(device, memory_format=torch.channels_last)
    trainable = [*model.encoder_q.parameters(), *model.heads_q.parameters()]
    optimizer = torch.optim.SGD(trainable, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    step, metrics_history = 0, []
    resumed = checkpoints.latest(checkpoint_dir)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        step, metrics_history = resumed["step"], json.loads(resumed["metrics"])
        torch.set_rng_state(resumed["rng_cpu"][rank % len(resumed["rng_cpu"])])
        print(json.dumps({"event": "resumed", "step": step}), flush=True)
    else:
        torch.manual_seed(spec.seed * 1_000_003 + rank)  # each rank its own augmentation draws
    trained = DistributedDataParallel(model, broadcast_buffers=False) if world_size > 1 else model
    if spec.compile:
        model.encoder_q.compile()

    stream = SeasonalStream(shards, spec.method, spec.seed, rank, world_size,
                            first_epoch=step // steps_per_epoch)
    loader = DataLoader(stream, batch_size=spec.batch_size // world_size, num_workers=spec.loader_workers,
                        pin_memory=device.type == "cuda", persistent_workers=spec.loader_workers > 0,
                        prefetch_factor=4 if spec.loader_workers else None)
    augment = BatchAugment(spec.input_size, AUGMENTED[spec.method],
                           augments_before_crop(spec.method, spec.augment_order),
                           tuple(range(len(AUGMENTED[spec.method])))).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.bf16 and device.type == "cuda")

    def checkpoint() -> None:
        states = [torch.get_rng_state()]
        if world_size > 1:
            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if rank == 0:
            checkpoints.save(checkpoint_dir, step, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "rng_cpu": states,
                "metrics": json.dumps(metrics_history), "backbone": spec.backbone, "method": spec.method,
            })

    window_start, window_samples = time.perf_counter(), 0
    batches = iter(loader)
    while step < total_steps:
        views = next(batches).to(device, non_blocking=True)
        query, *keys = augment(views)
        with autocast:
            loss, losses = trained(query, keys)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        window_samples += views.shape[0] * world_size
        if step % LOG_EVERY_STEPS == 0 or step == total_steps:
            elapsed = time.perf_counter() - window_start
            record = {"step": step, "loss": round(loss.item(), 5),
                      **{f"loss_{i}": round(x.item(), 5) for i, x in enumerate(losses)},
                      "lr": scheduler.get_last_lr()[0], "samples_per_s": round(window_samples / elapsed, 2)}
            window_start, window_samples = time.perf_counter(), 0
            if rank == 0:
                metrics_history.append(record)
                store.write_text(part.tree.path("metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in metrics_history))
            # samples_per_s already counts every rank, and each node reports it: it is not summed across parts.
            part.progress(step, total_steps, "steps", force=True, loss=record["loss"],
                          samples_per_s=record["samples_per_s"])
        if step % spec.checkpoint_every_steps == 0 or step == total_steps:
            checkpoint()
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {"steps": step, "checkpoint": store.join(checkpoint_dir, checkpoints.name(step)),
            "final_loss": metrics_history[-1]["loss"] if metrics_history else None}
