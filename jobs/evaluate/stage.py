"""Evaluate: one downstream protocol per part, this run's backbone against its baselines, one metrics.json."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from jobs.common.backbone import ReflectanceInput
from jobs.common.part import Part
from jobs.evaluate import backbones, change_detection, classification, datasets
from secoctl import store
from secoctl.model_card import FEATURES, RGB_BANDS, input_description
from secoctl.spec import Evaluation

DATASET_CACHE = Path(os.environ.get("SECOCTL_DATASETS", Path.home() / ".cache" / "secoctl" / "datasets"))
METRICS = {"eurosat": ["accuracy"], "bigearthnet": ["mAP", "mAP_macro"], "oscd": ["f1", "precision", "recall"]}
SPLITS = {"eurosat": ("train", "val", "test"), "bigearthnet": ("train", "val", "test"), "oscd": ("train", "test")}


def transform_for(task: str, input_size: int, device: torch.device) -> ReflectanceInput:
    """The pretrain input's stretch and normalisation; dense OSCD keeps its native 10 m size."""
    described = input_description(input_size)
    size = None if task == "oscd" else input_size
    return ReflectanceInput([described["stretch"][b] for b in RGB_BANDS], described["mean"], described["std"],
                            size).to(device)


def protocol(evaluation: Evaluation, backbone_name: str, splits: dict, transform: ReflectanceInput,
             device: torch.device):
    """A function of one backbone returning this evaluation's metrics."""
    if evaluation.task == "oscd":
        train, test = (datasets.scenes("oscd", splits[s]) for s in ("train", "test"))
        return lambda backbone: change_detection.evaluate(backbone, backbone_name, train, test, transform, device,
                                                          evaluation.epochs)
    if evaluation.finetunes:
        return lambda backbone: classification.finetune(backbone, evaluation.task, splits, transform, device,
                                                        evaluation.epochs, evaluation.label_fraction,
                                                        FEATURES[backbone_name])
    return lambda backbone: classification.linear(backbone, evaluation.task, splits, transform, device,
                                                  evaluation.epochs, evaluation.label_fraction)


def work(part: Part) -> dict[str, Any]:
    spec = part.experiment.spec
    evaluation = spec.evaluate[part.index]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root, download = datasets.dataset_root(evaluation.task, evaluation.data_path, DATASET_CACHE)
    splits = {split: datasets.open_split(evaluation.task, root, split, download) for split in SPLITS[evaluation.task]}
    run = protocol(evaluation, spec.pretrain.backbone, splits, transform_for(evaluation.task, spec.pretrain.input_size,
                                                                              device), device)
    models = backbones.candidates(part, evaluation.baselines)
    metric = METRICS[evaluation.task][0]
    results = {}
    for number, (label, backbone) in enumerate(models.items()):
        part.progress(number, len(models), "models", force=True)
        started = time.perf_counter()
        results[label] = run(backbone)
        results[label]["seconds"] = round(time.perf_counter() - started, 1)
    part.progress(len(models), len(models), "models", force=True,
                  **{label: round(r[metric], 4) for label, r in results.items()})
    record = {"task": evaluation.task, "protocol": "finetune" if evaluation.finetunes else "linear",
              "label_fraction": evaluation.label_fraction, "metric": metric, "metrics": METRICS[evaluation.task],
              "dataset": root, "epochs": evaluation.epochs, "backbone": spec.pretrain.backbone, "results": results}
    store.write_json(part.tree.path(evaluation.key, "metrics.json"), record)
    return {"key": evaluation.key, metric: {label: r[metric] for label, r in results.items()}}
