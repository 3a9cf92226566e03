"""The one training loop of every evaluation recipe, what each recipe is given, and the record its scores end in.

Every recipe is called the same way, `recipe(backbone, setting)` (jobs.evaluate.stage.RECIPES), and
says in a `Training` what trains and how: the model and its parameters, Adam's learning rate and
weight decay, the schedule stepped once an epoch, one epoch's batches, the loss of a batch, and which
modules train (the reference's recipes keep a backbone in eval or train mode on purpose). The loop
itself is the same for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from secoctl.model_card import FEATURES
from secoctl.spec import Evaluation


@dataclass(frozen=True)
class Setting:
    """What every recipe is given: one evaluation, its data splits (OSCD's as scenes), the input transform of the
    model evaluated (a ReflectanceInput, behind a band selection under recipe multispectral) and device."""

    evaluation: Evaluation
    architecture: str
    splits: dict
    transform: nn.Module
    device: torch.device

    @property
    def features(self) -> int:
        return FEATURES[self.architecture]


Schedule = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def steps_at(milestones: list[int]) -> Schedule:
    """lr × 0.1 at each milestone epoch."""
    return lambda optimizer: torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, 0.1)


def decay_by(gamma: float) -> Schedule:
    """lr × gamma after every epoch."""
    return lambda optimizer: torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)


def at_60_and_80_percent(epochs: int) -> Schedule:
    """lr × 0.1 at 60% and 80% of the epochs (the reference's EuroSAT schedule)."""
    return steps_at([int(0.6 * epochs), int(0.8 * epochs)])


@dataclass
class Training:
    """One recipe's training: `loss(batch)` for each batch of `batches(epoch)`, Adam over `parameters`."""

    model: nn.Module
    parameters: Iterable[nn.Parameter]
    batches: Callable[[int], Iterable[Any]]
    loss: Callable[[Any], torch.Tensor]
    schedule: Schedule
    lr: float = 1e-3
    weight_decay: float = 0.0
    train_mode: Callable[[nn.Module], None] = nn.Module.train  # called at the start of every epoch


def fit(training: Training, epochs: int) -> None:
    optimizer = torch.optim.Adam(training.parameters, lr=training.lr, weight_decay=training.weight_decay)
    schedule = training.schedule(optimizer)
    for epoch in range(epochs):
        training.train_mode(training.model)
        for batch in training.batches(epoch):
            loss = training.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()


def record(measure: Callable[[str], dict[str, float]], train_samples: int, test_samples: int) -> dict[str, float]:
    """`measure("test")`, `measure("val")` prefixed `val_`, and how many samples trained and tested."""
    result = measure("test")
    result.update({f"val_{name}": value for name, value in measure("val").items()})
    return {**result, "train_samples": train_samples, "test_samples": test_samples}
