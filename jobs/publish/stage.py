"""Publish: the final checkpoint's query encoder, in torchvision's names, as safetensors + STAC MLM item."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from jobs.common import tracking
from jobs.common.part import Part
from jobs.pretrain import checkpoints
from secoctl import store, weights
from secoctl.report import read_metrics


def already_published_by_us(storage: str, name: str, version: str, provenance: dict[str, Any]) -> bool:
    """A re-run after a crash between upload and commit marker finds its own version, not a clash."""
    if version not in weights.versions(storage, name):
        return False
    item = store.read_json(store.join(weights.version_uri(storage, name, version), weights.ITEM_FILE))
    published = item["properties"].get("secoctl:provenance", {})
    return {k: published.get(k) for k in ("experiment", "checkpoint_step")} == {
        k: provenance[k] for k in ("experiment", "checkpoint_step")
    }


def work(part: Part) -> dict[str, Any]:
    experiment = part.experiment
    publish, pretrain = experiment.spec.publish, experiment.spec.pretrain
    storage = store.storage(own=experiment.spec.storage)
    tensors, checkpoint = checkpoints.final_backbone(part.stage_tree("pretrain").checkpoints, pretrain.backbone)
    provenance = {
        "experiment": experiment.name,
        "checkpoint_step": int(checkpoint["step"]),
        "method": checkpoint.get("method"),
        "spec": experiment.to_yaml_dict(),
    }
    if not publish.force and already_published_by_us(storage, publish.name, publish.version, provenance):
        uri = weights.version_uri(storage, publish.name, publish.version)
    else:
        with tempfile.TemporaryDirectory(prefix="publish-") as scratch:
            path = Path(scratch, weights.WEIGHTS_FILE)
            save_file(tensors, str(path), metadata={"secoctl": json.dumps({"backbone": pretrain.backbone})})
            parameters = weights.parameter_count({k: t.shape for k, t in tensors.items()})
            uri = weights.publish_backbone(
                storage,
                path,
                publish.name,
                publish.version,
                pretrain.backbone,
                pretrain.input_size,
                parameters,
                provenance,
                read_metrics(part.tree.experiment_uri),
                force=publish.force,
                bands=experiment.spec.input_bands(),
            )
    run = tracking.run_of(experiment)
    if run:
        run.tag("weights", f"{publish.name}:{publish.version}")
        run.tag("weights_uri", uri)
        run.finish()
    part.progress(1, 1, "versions", force=True)
    print(json.dumps({"event": "published", "uri": uri, "weights": f"{publish.name}:{publish.version}"}), flush=True)
    return {
        "uri": uri,
        "name": publish.name,
        "version": publish.version,
        "checkpoint_step": provenance["checkpoint_step"],
    }
