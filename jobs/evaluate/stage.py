"""Evaluate: one downstream protocol per part, this run's backbone against its baselines, one metrics.json."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jobs.common import tracking
from jobs.common.part import Part
from jobs.common.tensorboard_events import FOLDER, EventLog, numeric_fields
from jobs.evaluate import backbones, change_detection, classification, datasets, reference_inputs
from jobs.evaluate.training import Setting
from secoctl import store
from secoctl.cache import cache_root
from secoctl.model_card import RGB_BANDS
from secoctl.spec import Evaluation

DATASET_CACHE = Path(os.environ.get("SECOCTL_DATASETS") or cache_root("datasets"))
METRICS = {
    "modern": {"eurosat": ["accuracy"], "bigearthnet": ["mAP", "mAP_macro"], "oscd": ["f1", "precision", "recall"]},
    "paper": {
        "eurosat": ["accuracy"],
        "bigearthnet": ["mAP", "mAP_global", "mAP_macro"],
        "oscd": ["f1", "precision", "recall", "f1_global", "precision_global", "recall_global"],
    },
}
# How each reported metric is computed, where the paper's and the standard definitions differ.
DEFINITIONS = {
    "paper": {
        "mAP": "micro-AP per test batch, averaged (the paper's)",
        "mAP_global": "micro-AP over every test sample (standard)",
        "mAP_macro": "macro-AP over every test sample (standard)",
        **{
            m: f"{m} per batch of 32 test tiles of 96 px, averaged (the paper's)" for m in ("f1", "precision", "recall")
        },
        **{f"{m}_global": f"{m} over every test pixel (standard)" for m in ("f1", "precision", "recall")},
    },
    "modern": {
        "mAP": "micro-AP over every test sample",
        "mAP_macro": "macro-AP over every test sample",
        **{m: f"{m} over every test pixel" for m in ("f1", "precision", "recall")},
    },
}
# multispectral trains and scores as modern does; only what each model sees differs (reference_inputs.own_input).
METRICS["multispectral"], DEFINITIONS["multispectral"] = METRICS["modern"], DEFINITIONS["modern"]
SPLITS = {"eurosat": ("train", "val", "test"), "bigearthnet": ("train", "val", "test"), "oscd": ("train", "test")}


# (recipe, task) -> how one backbone is evaluated there.
RECIPES: dict[tuple[str, str], Callable[[nn.Module, Setting], dict[str, float]]] = {
    ("paper", "eurosat"): classification.paper,
    ("paper", "bigearthnet"): classification.paper,
    ("paper", "oscd"): change_detection.paper,
    ("modern", "eurosat"): classification.modern,
    ("modern", "bigearthnet"): classification.modern,
    ("modern", "oscd"): change_detection.modern,
    ("multispectral", "eurosat"): classification.modern,
    ("multispectral", "bigearthnet"): classification.modern,
    ("multispectral", "oscd"): change_detection.modern,
}


def loaded_bands(evaluation: Evaluation) -> tuple[str, ...]:
    """RGB for recipes paper and modern; every band of the dataset for multispectral, each model picking its own."""
    return datasets.DATASET_BANDS[evaluation.task] if evaluation.recipe == "multispectral" else RGB_BANDS


def splits_of(evaluation: Evaluation, root: str, download: bool) -> dict:
    """The task's splits as its recipe reads them: BigEarthNet's paper recipe without snow and cloud, OSCD as scenes."""
    splits = {
        split: datasets.open_split(evaluation.task, root, split, download, loaded_bands(evaluation))
        for split in SPLITS[evaluation.task]
    }
    if evaluation.recipe == "paper" and evaluation.task == "bigearthnet":
        splits = {name: datasets.without_snow_and_cloud(split, root) for name, split in splits.items()}
    if evaluation.task == "oscd":
        splits = {name: datasets.scenes("oscd", split) for name, split in splits.items()}
    return splits


def work(part: Part) -> dict[str, Any]:
    spec = part.experiment.spec
    evaluation = spec.evaluate[part.index]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root, download = datasets.dataset_root(evaluation.task, evaluation.data_path, DATASET_CACHE)
    multispectral = evaluation.recipe == "multispectral"
    shared = (
        None
        if multispectral
        else reference_inputs.transform_for(evaluation.task, evaluation.recipe, spec.pretrain.input_size, device)
    )
    splits = splits_of(evaluation, root, download)
    recipe = RECIPES[(evaluation.recipe, evaluation.task)]
    models = backbones.candidates(part, evaluation.baselines)
    metrics = METRICS[evaluation.recipe][evaluation.task]
    metric = metrics[0]
    results = {}
    for number, (label, backbone) in enumerate(models.items()):
        part.progress(number, len(models), "models", force=True)
        started = time.perf_counter()
        described = backbones.input_of(part, label) if multispectral else None
        transform = reference_inputs.own_input(evaluation.task, described, device) if described else shared
        results[label] = recipe(backbone, Setting(evaluation, spec.pretrain.backbone, splits, transform, device))
        if described:
            results[label]["bands"] = described["bands"]
        results[label]["seconds"] = round(time.perf_counter() - started, 1)
        results[label].update(backbones.provenance(part, label))
    part.progress(
        len(models), len(models), "models", force=True, **{label: round(r[metric], 4) for label, r in results.items()}
    )
    record = {
        "task": evaluation.task,
        "protocol": "finetune" if evaluation.finetunes else "linear",
        "recipe": evaluation.recipe,
        "label_fraction": evaluation.label_fraction,
        "metric": metric,
        "metrics": metrics,
        "definitions": {m: DEFINITIONS[evaluation.recipe][m] for m in metrics if m in DEFINITIONS[evaluation.recipe]},
        "dataset": root,
        "epochs": evaluation.epochs,
        "backbone": spec.pretrain.backbone,
        "results": results,
    }
    if multispectral:
        record["dataset_bands"] = list(loaded_bands(evaluation))
    store.write_json(part.tree.path(evaluation.key, "metrics.json"), record)
    track(
        part,
        evaluation.key,
        numeric_fields({f"{m}/{label}": r.get(m) for label, r in results.items() for m in metrics}),
    )
    return {"key": evaluation.key, metric: {label: r[metric] for label, r in results.items()}}


def track(part: Part, key: str, values: dict[str, float]) -> None:
    """The metrics as TensorBoard scalars `METRIC/MODEL` under `<key>/tensorboard`, and in MLflow as
    `<key>/METRIC/MODEL`."""
    events = EventLog(part.tree.path(key, FOLDER))
    events.scalars(0, values)
    events.close()
    run = tracking.run_of(part.experiment)
    if run:
        run.metrics(0, {f"{key}/{tag}": value for tag, value in values.items()})
        run.finish()
