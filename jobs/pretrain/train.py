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
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from jobs.common import tracking
from jobs.common.part import Part
from jobs.common.shards import shard_entries
from jobs.common.tensorboard_events import FOLDER, EventLog, numeric_fields
from jobs.pretrain import checkpoints
from jobs.pretrain.build import Setup, build
from jobs.pretrain.feed import DeviceFeed
from jobs.pretrain.loader import SeasonalBatches, ShardRef
from jobs.pretrain.seco import subspaces_for
from jobs.pretrain.shard_cache import ShardCache
from jobs.pretrain.step import train_step
from secoctl import collapse, store
from secoctl.spec import Pretrain
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


def _processes() -> tuple[int, int, torch.device]:
    """This process's rank, the world size and its device; the process group joined when there are several."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        ranks_here, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count()
        if ranks_here > gpus:
            # NCCL cannot put two ranks on one device; say so instead of failing deep inside it.
            raise SystemExit(
                f"pretrain: {ranks_here} ranks on this node but {gpus} GPU(s) visible: "
                "set spec.pretrain.gpusPerNode to at most the node's GPUs"
            )
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


@dataclass
class Training:
    """One rank's run: what set-up made, and how far it has got."""

    part: Part
    rank: int
    world_size: int
    device: torch.device
    setup: Setup
    trained: nn.Module  # the model, inside DistributedDataParallel when there are several ranks
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    feed: DeviceFeed
    cache: ShardCache
    total_steps: int
    step: int
    metrics_history: list[dict[str, Any]]
    checkpoint_dir: str
    events: EventLog | None  # rank 0's TensorBoard log
    tracker: tracking.Run | None  # rank 0's MLflow run, where the spec names one

    @property
    def spec(self) -> Pretrain:
        return self.part.experiment.spec.pretrain


def _start(part: Part) -> Training:
    """This rank's processes, model, optimiser and input path, resumed from the newest readable checkpoint."""
    spec = part.experiment.spec.pretrain
    rank, world_size, device = _processes()
    if spec.batch_size % world_size:
        raise SystemExit(f"spec.pretrain.batchSize {spec.batch_size} is not divisible by {world_size} processes")
    entries = shard_entries(part.input_index("shards"))
    shards = [ShardRef(entry["uri"], entry["samples"]) for entry in entries]
    steps_per_epoch = max(sum(entry["samples"] for entry in entries) // spec.batch_size, 1)
    total_steps = spec.max_steps or spec.epochs * steps_per_epoch
    milestones = [m * steps_per_epoch for m in spec.lr_milestones]
    checkpoint_dir = part.tree.checkpoints

    torch.manual_seed(spec.seed)  # the same initial weights on every rank
    setup = build(spec, part.experiment.spec.input_bands(), device)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(setup.optimizer, milestones, gamma=0.1)
    step, metrics_history = 0, []
    resumed = checkpoints.latest(checkpoint_dir)
    if resumed is not None:
        setup.model.load_state_dict(resumed["model"])
        setup.optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        step, metrics_history = resumed["step"], json.loads(resumed["metrics"])
        torch.set_rng_state(resumed["rng_cpu"][rank % len(resumed["rng_cpu"])])
        print(json.dumps({"event": "resumed", "step": step}), flush=True)
    else:
        torch.manual_seed(spec.seed * 1_000_003 + rank)  # each rank its own augmentation draws
    trained = DistributedDataParallel(setup.model, broadcast_buffers=False) if world_size > 1 else setup.model

    cache = ShardCache.from_environment(
        part.experiment.name, default_bytes=cache_budget(spec.resources.ephemeral_storage)
    )
    batches = SeasonalBatches(
        shards,
        spec.method,
        spec.batch_size // world_size,
        spec.seed,
        rank,
        world_size,
        cache,
        first_epoch=step // steps_per_epoch,
        fetch_ahead=spec.loader_workers,
    )
    feed = DeviceFeed(batches, device)
    # A resumed run's event file hides the old one's records after the checkpoint (purge_step).
    events = EventLog(part.tree.path(FOLDER), purge_step=step + 1 if resumed else None) if rank == 0 else None
    tracker = tracking.run_of(part.experiment) if rank == 0 else None
    return Training(
        part=part,
        rank=rank,
        world_size=world_size,
        device=device,
        setup=setup,
        trained=trained,
        scheduler=scheduler,
        feed=feed,
        cache=cache,
        total_steps=total_steps,
        step=step,
        metrics_history=metrics_history,
        checkpoint_dir=checkpoint_dir,
        events=events,
        tracker=tracker,
    )


class Window:
    """A logging window's sums of the loss and the collapse figures, kept on the device until its one read-back."""

    def __init__(self, subspaces: int, device: torch.device) -> None:
        self.loss = torch.zeros(1 + subspaces, device=device)
        self.health = torch.zeros(subspaces, 3, device=device)  # SeCo.health: std, positive and queue cosines
        self.steps, self.samples, self.started = 0, 0, time.perf_counter()

    def add(self, loss: torch.Tensor, losses: list[torch.Tensor], health: torch.Tensor, samples: int) -> None:
        self.loss += torch.stack([loss, *losses]).float()
        self.health += health
        self.steps += 1
        self.samples += samples

    def read(self, step: int, lr: float, stop_requested: bool, world_size: int) -> tuple[dict[str, Any], bool]:
        """The window's record, and whether any rank asked to stop; the window starts again."""
        stop_votes = torch.tensor([float(stop_requested)], device=self.loss.device)
        if world_size > 1:
            dist.all_reduce(stop_votes, op=dist.ReduceOp.MAX)  # any rank signalled: all stop here
        # The one host sync of a logging window, which also reads the ranks' agreement on stopping.
        subspaces = len(self.health)
        health_means = self.health / self.steps
        *means, stop_vote = torch.cat(
            [self.loss / self.steps, health_means[:, 0], health_means[:, 1:].mean(0), stop_votes]
        ).tolist()
        elapsed = time.perf_counter() - self.started
        losses_mean, stds, (pos_cos, neg_cos) = means[: 1 + subspaces], means[1 + subspaces : -2], means[-2:]
        record = {
            "step": step,
            "loss": round(losses_mean[0], 5),
            **{f"loss_{i}": round(x, 5) for i, x in enumerate(losses_mean[1:])},
            "lr": lr,
            "samples_per_s": round(self.samples / elapsed, 2),
            **{f"{collapse.PREFIX}{i}": round(x, 6) for i, x in enumerate(stds)},
            "pos_cos": round(pos_cos, 5),
            "neg_cos": round(neg_cos, 5),
        }
        self.started, self.samples, self.steps = time.perf_counter(), 0, 0
        self.loss.zero_()
        self.health.zero_()
        return record, stop_vote > 0


def _log(training: Training, record: dict[str, Any]) -> None:
    """A window's record: rank 0 writes metrics.jsonl, TensorBoard and (when the spec names one) MLflow; every
    rank reports its part's progress."""
    training.metrics_history.append(record)  # every rank: each node's progress counts its own collapse run
    if training.rank == 0:
        store.write_text(training.part.tree.metrics, "".join(json.dumps(r) + "\n" for r in training.metrics_history))
        training.events.scalars(training.step, numeric_fields(record))
        if training.tracker:
            training.tracker.metrics(training.step, numeric_fields(record))
    stds = [value for key, value in record.items() if key.startswith(collapse.PREFIX)]
    # samples_per_s already counts every rank, and each node reports it: it is not summed across parts.
    training.part.progress(
        training.step,
        training.total_steps,
        "steps",
        force=True,
        loss=record["loss"],
        samples_per_s=record["samples_per_s"],
        shard_fetches=len(training.cache.fetches),
        embed_std=round(min(stds), 6),
        embed_std_low_logs=collapse.low_logs(training.metrics_history, training.spec.embedding_dim),
    )


def _checkpoint(training: Training) -> None:
    """Rank 0 saves the model, optimiser, schedule, step, metrics and every rank's CPU generator state."""
    states = [torch.get_rng_state()]
    if training.world_size > 1:
        gathered: list[Any] = [None] * training.world_size
        dist.all_gather_object(gathered, states[0])
        states = gathered
    if training.rank == 0:
        spec, setup = training.spec, training.setup
        checkpoints.save(
            training.checkpoint_dir,
            training.step,
            {
                "model": setup.model.state_dict(),
                "optimizer": setup.optimizer.state_dict(),
                "scheduler": training.scheduler.state_dict(),
                "step": training.step,
                "rng_cpu": states,
                "metrics": json.dumps(training.metrics_history),
                "backbone": spec.backbone,
                "method": spec.method,
            },
        )


def work(part: Part) -> dict[str, Any]:
    """Train to the spec's last step, or to the end of the window in which SIGTERM arrived."""
    stop = StopRequest()  # first: a SIGTERM during set-up stops the run at its first window
    training = _start(part)
    spec, setup = training.spec, training.setup
    window = Window(subspaces_for(spec.method), training.device)
    stopping = False
    while training.step < training.total_steps and not stopping:
        slots = training.feed.next()
        loss, losses, health = train_step(training.trained, setup.optimizer, setup.augment, slots, setup.autocast)
        training.scheduler.step()
        window.add(loss, losses, health, slots.shape[0] * training.world_size)
        training.step += 1
        if training.step % LOG_EVERY_STEPS == 0 or training.step == training.total_steps:
            record, stop_voted = window.read(
                training.step, training.scheduler.get_last_lr()[0], stop.requested, training.world_size
            )
            stopping = stop_voted and training.step < training.total_steps
            _log(training, record)
        if stopping or training.step % spec.checkpoint_every_steps == 0 or training.step == training.total_steps:
            _checkpoint(training)
    return _finish(training, stopping)


def _finish(training: Training, stopping: bool) -> dict[str, Any]:
    """Close the input path and the logs, let every rank meet; the part's summary, or exit 143 when stopped."""
    training.feed.close()
    if training.events:
        training.events.close()
    if training.tracker and not stopping:
        training.tracker.finish()
    if training.world_size > 1:
        dist.barrier()  # no rank leaves before rank 0's checkpoint is written
        dist.destroy_process_group()
    if stopping:
        print(json.dumps({"event": "stopped", "signal": "SIGTERM", "step": training.step}), flush=True)
        raise SystemExit(STOPPED_EXIT_CODE)  # not committed: the part resumes from this checkpoint
    history = training.metrics_history
    return {
        "steps": training.step,
        "checkpoint": store.join(training.checkpoint_dir, checkpoints.name(training.step)),
        "final_loss": history[-1]["loss"] if history else None,
    }
