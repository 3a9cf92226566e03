"""What a pretrain step needs, built from the spec's pretrain section.

The stage (jobs/pretrain/train.py) and both benchmarks (benchmarks/pretrain.py, benchmarks/learning.py)
build here, so a benchmark times and trains the stage's own model, optimiser, augmentation and autocast,
with the spec's defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from jobs.pretrain.augment import BatchAugment
from jobs.pretrain.seco import SeCo, subspaces_for
from jobs.pretrain.views import AUGMENTED, VIEW_SLOTS, augments_before_crop
from secoctl.spec import Pretrain


@dataclass(frozen=True)
class Setup:
    """The arguments of jobs.pretrain.step.train_step other than the batch."""

    model: SeCo
    optimizer: torch.optim.Optimizer
    augment: BatchAugment
    autocast: AbstractContextManager


def build(spec: Pretrain, bands: Sequence[str], device: torch.device) -> Setup:
    """SeCo over `bands` on `device` (channels_last; its query encoder compiled when spec.compile), SGD over
    the query side, the method's views as batched augmentation, and bf16 autocast where spec.bf16 and a GPU.

    The model's initial weights come from torch's global generator, as seeded by the caller.
    """
    model = SeCo(
        spec.backbone,
        subspaces_for(spec.method),
        spec.embedding_dim,
        spec.queue_size,
        spec.encoder_momentum,
        spec.temperature,
        len(bands),
    ).to(device, memory_format=torch.channels_last)
    if spec.compile:
        model.encoder_q.compile()
    trainable = [*model.encoder_q.parameters(), *model.heads_q.parameters()]  # the key side follows by momentum
    optimizer = torch.optim.SGD(trainable, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    augment = BatchAugment(
        spec.input_size,
        AUGMENTED[spec.method],
        augments_before_crop(spec.method, spec.augment_order),
        VIEW_SLOTS[spec.method],
        bands,
    ).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.bf16 and device.type == "cuda")
    return Setup(model, optimizer, augment, autocast)
