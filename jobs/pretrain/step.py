"""One SeCo training step: what the stage runs and what both benchmarks time, so their figures are the stage's."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn

from jobs.pretrain.augment import BatchAugment


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    augment: BatchAugment,
    slots: torch.Tensor,
    autocast: AbstractContextManager,
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Augment a batch of drawn timestamps on its device, then one optimiser step.

    Returns the loss tensors and the step's health (SeCo.health, per sub-space) without reading them
    back: the caller decides when to sync.
    """
    query, *keys = augment(slots)
    with autocast:
        loss, losses, health = model(query, keys)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), [part.detach() for part in losses], health
