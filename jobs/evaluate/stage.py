"""Evaluate: one downstream protocol per part, this run's backbone against its baselines, one metrics.json."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from jobs.common.backbone import ReflectanceInput
from jobs.common.part import Part
from jobs.evaluate import backbones, change_detection, classification, datasets, reference_inputs
from secoctl import store
from secoctl.model_card import FEATURES
from secoctl.spec import Evaluation

DATASET_CACHE = Path(os.environ.get("SECOCTL_DATASETS", Path.home() / ".cache" / "secoctl" / "datasets"))
METRICS = {
    "modern": {"eurosat": ["accuracy"], "bigearthnet": ["mAP", "mAP_macro"], "oscd": ["f1", "precision", "recall"]},
    "paper": {"eurosat": ["accuracy"], "bigearthnet": ["mAP", "mAP_global", "mAP_macro"],
              "oscd": ["f1", "precision", "recall", "f1_global", "precision_global", "recall_global"]},
}
# How each reported metric is computed, where the paper's and the standard definitions differ.
DEFINITIONS = {
    "paper": {"mAP": "micro-AP per test batch, averaged (the paper's)",
              "mAP_global": "micro-AP over every test sample (standard)",
              "mAP_macro": "macro-AP over every test sample (standard)",
              **{m: f"{m} per batch of 32 test tiles of 96 px, averaged (the paper's)"
                 for m in ("f1", "precision", "recall")},
              **{f"{m}_global": f"{m} over every test pixel (standard)" for m in ("f1", "precision", "recall")}},
    "modern": {"mAP": "micro-AP over every test sample", "mAP_macro": "macro-AP over every test sample",
               **{m: f"{m} over every test pixel" for m in ("f1", "precision", "recall")}},
}
SPLITS = {"eurosat": ("train", "val", "test"), "bigearthnet": ("train", "val", "test"), "oscd": ("train", "test")}


def protocol(evaluation: Evaluation, backbone_name: str, splits: dict, transform: ReflectanceInput,
             device: torch.device):
    """A function of one backbone returning this evaluation's metrics."""
    paper = evaluation.recipe == "paper"
    features = FEATURES[backbone_name]
    if evaluation.task == "oscd":
        train, test = (datasets.scenes("oscd", splits[s]) for s in ("train", "test"))
        run = change_detection.evaluate_paper if paper else change_detection.evaluate
        return lambda backbone: run(backbone, backbone_name, train, test, transform, device, evaluation.epochs)
    if paper and evaluation.task == "eurosat":
        return lambda backbone: classification.eurosat_paper(backbone, splits, transform, device, evaluation.epochs,
                                                             evaluation.label_fraction, features)
    if paper:
        return lambda backbone: classification.bigearthnet_paper(backbone, splits, transform, device,
                                                                 evaluation.epochs, evaluation.label_fraction,
                                                                 features, evaluation.finetunes)
    if evaluation.finetunes:
        return lambda backbone: classification.finetune(backbone, evaluation.task, splits, transform, device,
                                                        evaluation.epochs, evaluation.label_fraction, features)
    return lambda backbone: classification.linear(backbone, evaluation.task, splits, transform, device,
                                                  evaluation.epochs, evaluation.label_fraction)


def work(part: Part) -> dict[str, Any]:
    spec = part.experiment.spec
    evaluation = spec.evaluate[part.index]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root, download = datasets.dataset_root(evaluation.task, evaluation.data_path, DATASET_CACHE)
    splits = {split: datasets.open_split(evaluation.task, root, split, download) for split in SPLITS[evaluation.task]}
    if evaluation.recipe == "paper" and evaluation.task == "bigearthnet":
        splits = {name: datasets.without_snow_and_cloud(split, root) for name, split in splits.items()}
    transform = reference_inputs.transform_for(evaluation.task, evaluation.recipe, spec.pretrain.input_size, device)
    run = protocol(evaluation, spec.pretrain.backbone, splits, transform, device)
    models = backbones.candidates(part, evaluation.baselines)
    metrics = METRICS[evaluation.recipe][evaluation.task]
    metric = metrics[0]
    results = {}
    for number, (label, backbone) in enumerate(models.items()):
        part.progress(number, len(models), "models", force=True)
        started = time.perf_counter()
        results[label] = run(backbone)
        results[label]["seconds"] = round(time.perf_counter() - started, 1)
        results[label].update(backbones.provenance(part, label))
    part.progress(len(models), len(models), "models", force=True,
                  **{label: round(r[metric], 4) for label, r in results.items()})
    record = {"task": evaluation.task, "protocol": "finetune" if evaluation.finetunes else "linear",
              "recipe": evaluation.recipe, "label_fraction": evaluation.label_fraction, "metric": metric,
              "metrics": metrics, "definitions": {m: DEFINITIONS[evaluation.recipe][m] for m in metrics
                                                  if m in DEFINITIONS[evaluation.recipe]},
              "dataset": root, "epochs": evaluation.epochs, "backbone": spec.pretrain.backbone, "results": results}
    store.write_json(part.tree.path(evaluation.key, "metrics.json"), record)
    return {"key": evaluation.key, metric: {label: r[metric] for label, r in results.items()}}
