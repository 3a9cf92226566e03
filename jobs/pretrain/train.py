"""The pretrain stage: SeCo or MoCo-v2 on the training shards, one process per GPU under torchrun.

The same code runs on CPU (gloo, fp32) for tests and the embedded executor, and on GPUs (NCCL,
bf16 autocast, channels_last, batched GPU augmentation) in pods. The input path: training shards
through the node's cache (jobs.pretrain.shard_cache), a loader thread that only copies bytes
(jobs.pretrain.loader), a side-stream copy to the device (jobs.pretrain.feed), then one
`train_step` (jobs.pretrain.step); the loss is read back every LOG_EVERY_STEPS, not every step,
and with it the window's collapse figures (secoctl.collapse), summed on the device the same way.

SIGTERM (Kueue preemption, a node drain, a spot reclaim; torchrun passes it on to every worker) only
sets a flag on the host. The ranks agree on it where the window's loss is read back anyway: a
single-element all_reduce folded into that read, so stopping costs no host sync of its own, at the price
of finishing the window (at most LOG_EVERY_STEPS steps; the pod's grace allows for them, see
secoctl.stages.pretrain_stop_s). Every rank then stops at the same step, rank 0 checkpoints it, all
meet at a barrier and exit 143: the resumed run starts from the very step this one reached.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from jobs.common import tracking
from jobs.common.part import Part
from jobs.common.shards import shard_entries
from jobs.common.tensorboard_events import FOLDER, EventLog, numeric_fields
from jobs.pretrain import checkpoints
from jobs.pretrain.build import build
from jobs.pretrain.feed import DeviceFeed
from jobs.pretrain.loader import SeasonalBatches, ShardRef
from jobs.pretrain.seco import subspaces_for
from jobs.pretrain.shard_cache import ShardCache
from jobs.pretrain.step import train_step
from secoctl import collapse, store
from secoctl.spec.quantity import cache_budget
from secoctl.stages import PRETRAIN_WINDOW_STEPS as LOG_EVERY_STEPS

STOPPED_EXIT_CODE = 128 + signal.SIGTERM  # as a process ended by SIGTERM reports itself


class StopRequest:
    """Whether SIGTERM has arrived; the handler only sets the flag, the loop decides when to act on it."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum, frame) -> None:
        self.requested = True


def _setup() -> tuple[int, int, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        ranks_here, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count()
        if ranks_here > gpus:
            # NCCL cannot put two ranks on one device; say so instead of failing deep inside it.
            raise SystemExit(f"pretrain: {ranks_here} ranks on this node but {gpus} GPU(s) visible: "
                             "set spec.pretrain.gpusPerNode to at most the node's GPUs")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def work(part: Part) -> dict[str, Any]:
    stop = StopRequest()  # first: a SIGTERM during set-up stops the run at its first window
    spec = part.experiment.spec.pretrain
    rank, world_size, device = _setup()
    if spec.batch_size % world_size:
        raise SystemExit(f"spec.pretrain.batchSize {spec.batch_size} is not divisible by {world_size} processes")
    entries = shard_entries(part.input_index("shards"))
    shards = [ShardRef(entry["uri"], entry["samples"]) for entry in entries]
    total_samples = sum(entry["samples"] for entry in entries)
    steps_per_epoch = max(total_samples // spec.batch_size, 1)
    total_steps = spec.max_steps or spec.epochs * steps_per_epoch
    milestones = [m * steps_per_epoch for m in spec.lr_milestones]
    checkpoint_dir = part.tree.path("checkpoints")

    torch.manual_seed(spec.seed)  # the same initial weights on every rank
    bands = part.experiment.spec.input_bands()
    setup = build(spec, bands, device)
    model, optimizer, augment, autocast = setup.model, setup.optimizer, setup.augment, setup.autocast
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

    cache = ShardCache.from_environment(part.experiment.name,
                                        default_bytes=cache_budget(spec.resources.ephemeral_storage))
    batches = SeasonalBatches(shards, spec.method, spec.batch_size // world_size, spec.seed, rank, world_size,
                              cache, first_epoch=step // steps_per_epoch, fetch_ahead=spec.loader_workers)
    feed = DeviceFeed(batches, device)

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

    # Rank 0 logs each record to metrics.jsonl, TensorBoard and (when the spec names one) MLflow; a resumed
    # run's event file hides the old one's records after the checkpoint (purge_step).
    events = EventLog(part.tree.path(FOLDER), purge_step=step + 1 if resumed else None) if rank == 0 else None
    run = tracking.run_of(part.experiment) if rank == 0 else None
    window_start, window_samples = time.perf_counter(), 0
    subspaces = subspaces_for(spec.method)
    window_loss = torch.zeros(1 + subspaces, device=device)
    window_health = torch.zeros(subspaces, 3, device=device)  # SeCo.health: std, positive and queue cosines
    window_steps, stopping = 0, False
    while step < total_steps and not stopping:
        slots = feed.next()
        loss, losses, health = train_step(trained, optimizer, augment, slots, autocast)
        scheduler.step()
        window_loss += torch.stack([loss, *losses]).float()
        window_health += health
        step += 1
        window_steps += 1
        window_samples += slots.shape[0] * world_size
        if step % LOG_EVERY_STEPS == 0 or step == total_steps:
            stop_votes = torch.tensor([float(stop.requested)], device=device)
            if world_size > 1:
                dist.all_reduce(stop_votes, op=dist.ReduceOp.MAX)  # any rank signalled: all stop here
            # The one host sync of a logging window, which also reads the ranks' agreement on stopping.
            health_means = window_health / window_steps
            *means, stop_vote = torch.cat([window_loss / window_steps, health_means[:, 0],
                                           health_means[:, 1:].mean(0), stop_votes]).tolist()
            stopping = stop_vote > 0 and step < total_steps
            elapsed = time.perf_counter() - window_start
            losses_mean, stds, (pos_cos, neg_cos) = means[:1 + subspaces], means[1 + subspaces:-2], means[-2:]
            record = {"step": step, "loss": round(losses_mean[0], 5),
                      **{f"loss_{i}": round(x, 5) for i, x in enumerate(losses_mean[1:])},
                      "lr": scheduler.get_last_lr()[0], "samples_per_s": round(window_samples / elapsed, 2),
                      **{f"{collapse.PREFIX}{i}": round(x, 6) for i, x in enumerate(stds)},
                      "pos_cos": round(pos_cos, 5), "neg_cos": round(neg_cos, 5)}
            window_start, window_samples, window_steps = time.perf_counter(), 0, 0
            window_loss.zero_()
            window_health.zero_()
            metrics_history.append(record)  # every rank: each node's progress counts its own collapse run
            if rank == 0:
                store.write_text(part.tree.path("metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in metrics_history))
                events.scalars(step, numeric_fields(record))
                if run:
                    run.metrics(step, numeric_fields(record))
            # samples_per_s already counts every rank, and each node reports it: it is not summed across parts.
            part.progress(step, total_steps, "steps", force=True, loss=record["loss"],
                          samples_per_s=record["samples_per_s"], shard_fetches=len(cache.fetches),
                          embed_std=round(min(stds), 6), embed_std_low_logs=collapse.low_logs(metrics_history, spec.embedding_dim))
        if stopping or step % spec.checkpoint_every_steps == 0 or step == total_steps:
            checkpoint()
    feed.close()
    if events:
        events.close()
    if run and not stopping:
        run.finish()
    if world_size > 1:
        dist.barrier()  # no rank leaves before rank 0's checkpoint is written
        dist.destroy_process_group()
    if stopping:
        print(json.dumps({"event": "stopped", "signal": "SIGTERM", "step": step}), flush=True)
        raise SystemExit(STOPPED_EXIT_CODE)  # not committed: the part resumes from this checkpoint
    return {"steps": step, "checkpoint": store.join(checkpoint_dir, checkpoints.name(step)),
            "final_loss": metrics_history[-1]["loss"] if metrics_history else None}
