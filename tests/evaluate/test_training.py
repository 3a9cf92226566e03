"""The one evaluation training loop: what every recipe configures, and that no recipe trains on its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import jobs.evaluate
from jobs.evaluate import stage
from jobs.evaluate.training import Training, fit, record, steps_at
from secoctl.spec import Evaluation


def test_each_epoch_sets_the_modes_then_runs_its_batches_and_steps_the_schedule_once():
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    optimizers, events = [], []

    def schedule(optimizer: torch.optim.Optimizer):
        optimizers.append(optimizer)
        return steps_at([1])(optimizer)

    def batches(epoch: int):
        events.append(("epoch", epoch, model.training))
        return [torch.ones(4, 2)] * 2

    def loss(batch: torch.Tensor) -> torch.Tensor:
        events.append(("lr", optimizers[0].param_groups[0]["lr"]))
        return model(batch).square().mean()

    before = model.weight.detach().clone()
    model.eval()
    fit(
        Training(
            model,
            model.parameters(),
            batches,
            loss,
            schedule,
            lr=0.5,
            train_mode=lambda m: events.append(("mode",)) or m.train(),
        ),
        2,
    )
    assert events == [
        ("mode",),
        ("epoch", 0, True),
        ("lr", 0.5),
        ("lr", 0.5),
        ("mode",),
        ("epoch", 1, True),
        ("lr", pytest.approx(0.05)),
        ("lr", pytest.approx(0.05)),
    ]
    assert not torch.equal(model.weight, before)


def test_the_record_is_test_metrics_then_validation_ones_prefixed_and_the_counts():
    measured = {"test": {"accuracy": 0.75}, "val": {"accuracy": 0.5}}
    assert record(measured.__getitem__, 80, 40) == {
        "accuracy": 0.75,
        "val_accuracy": 0.5,
        "train_samples": 80,
        "test_samples": 40,
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"task": "eurosat"},
        {"task": "bigearthnet"},
        {"task": "oscd"},
        {"task": "bigearthnet", "protocol": "finetune"},
        *(
            {"task": task, "recipe": "modern", "protocol": protocol}
            for task in ("eurosat", "bigearthnet")
            for protocol in ("linear", "finetune")
        ),
        {"task": "oscd", "recipe": "modern"},
    ],
)
def test_every_evaluation_a_spec_allows_has_a_recipe(fields):
    evaluation = Evaluation(**fields)
    assert callable(stage.RECIPES[(evaluation.recipe, evaluation.task)])


def test_only_the_training_module_steps_an_optimizer():
    package = Path(jobs.evaluate.__file__).parent
    stepping = sorted(
        path.name
        for path in package.glob("*.py")
        if any(
            isinstance(node, ast.Attribute) and node.attr in ("backward", "zero_grad")
            for node in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert stepping == ["training.py"]
