"""Evaluate: one downstream protocol per part, this run's backbone against its baselines, one metrics.json."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from jobs.common.part import Part
from jobs.evaluate import backbones, linear_probe
from secoctl import store

DATASET_CACHE = Path(os.environ.get("SECOCTL_DATASETS", Path.home() / ".cache" / "secoctl" / "datasets"))


def work(part: Part) -> dict[str, Any]:
    spec = part.experiment.spec
    evaluation = spec.evaluate[part.index]
    if evaluation.task != "eurosat" or evaluation.finetunes:
        raise RuntimeError(f"evaluate[{part.index}]: {evaluation.task} {'fine-tuning' if evaluation.finetunes else 'linear'} "
                           "is not implemented in this release; only the EuroSAT linear probe is (see the README)")
    root, download = linear_probe.dataset_root(evaluation.data_path, DATASET_CACHE)
    models = backbones.candidates(part, evaluation.baselines)
    results = {}
    for number, (label, backbone) in enumerate(models.items()):
        part.progress(number, len(models), "models", force=True)
        started = time.perf_counter()
        results[label] = linear_probe.evaluate(backbone, root, download, spec.pretrain.input_size,
                                               evaluation.epochs, evaluation.label_fraction)
        results[label]["seconds"] = round(time.perf_counter() - started, 1)
    part.progress(len(models), len(models), "models", force=True,
                  **{label: round(r["accuracy"], 4) for label, r in results.items()})
    record = {"task": evaluation.task, "protocol": "linear", "label_fraction": evaluation.label_fraction,
              "metric": "accuracy", "dataset": root, "epochs": evaluation.epochs,
              "backbone": spec.pretrain.backbone, "results": results}
    store.write_json(part.tree.path(evaluation.key, "metrics.json"), record)
    return {"key": evaluation.key, "accuracy": {label: r["accuracy"] for label, r in results.items()}}
