"""The backbones an evaluation compares: this run's, random init, ImageNet, published weights."""

from __future__ import annotations

from typing import Any

from torch import nn

from jobs.common.backbone import build_backbone
from jobs.common.part import Part
from jobs.pretrain import checkpoints
from secoctl import store, weights
from secoctl.model_card import RGB_BANDS, input_description

THIS_RUN = "this-run"


def this_run(part: Part, name: str) -> nn.Module:
    tensors, _ = checkpoints.final_backbone(part.stage_tree("pretrain").checkpoints, name)
    model = build_backbone(name, in_chans=tensors["conv1.weight"].shape[1])
    model.load_state_dict(tensors, strict=True)
    return model


def baseline(label: str, name: str, storage: str, in_chans: int = 3) -> nn.Module:
    """'random' (seeded, over this run's `in_chans` bands), 'imagenet' (torchvision's supervised weights, RGB)
    or a published NAME[:VERSION] (over the bands it lists)."""
    import torch
    import torchvision

    if label == "random":
        torch.manual_seed(0)
        return build_backbone(name, in_chans=in_chans)
    if label == "imagenet":
        enum = {"resnet18": torchvision.models.ResNet18_Weights, "resnet50": torchvision.models.ResNet50_Weights}[name]
        model = getattr(torchvision.models, name)(weights=enum.IMAGENET1K_V1)  # downloads once into torch's cache
        model.fc = nn.Identity()
        return model.eval()
    model, _ = weights.load(label, storage=storage)
    return model


def candidates(part: Part, labels: list[str]) -> dict[str, nn.Module]:
    spec = part.experiment.spec
    storage = store.storage(own=spec.storage)
    in_chans = len(spec.input_bands())
    return {
        THIS_RUN: this_run(part, spec.pretrain.backbone),
        **{label: baseline(label, spec.pretrain.backbone, storage, in_chans) for label in labels},
    }


def input_of(part: Part, label: str) -> dict[str, Any]:
    """The secoctl:input a compared model was trained with: this run's (random init shares it), ImageNet's RGB
    one, or a published weights' own, RGB where it lists no bands."""
    spec = part.experiment.spec
    if label in (THIS_RUN, "random"):
        return input_description(spec.pretrain.input_size, spec.input_bands())
    if label == "imagenet":
        return input_description(spec.pretrain.input_size)
    published = weights.show(store.storage(own=spec.storage), label)["properties"]["secoctl:input"]
    return {"bands": list(RGB_BANDS), **published}


# The paper's pre-training sets by size: SeCo-100K is 20,000 locations × 5 timestamps, SeCo-1M 200,000 × 5.
SECO_SETS = {(20_000, 5): "seco-100k", (200_000, 5): "seco-1m"}


def provenance(part: Part, label: str) -> dict[str, str | None]:
    """The architecture of a compared model and which of the paper's pre-training sets it matches: this run
    by its method and its collection's size, an imported release by its provenance; None for random,
    ImageNet and anything else."""
    spec = part.experiment.spec
    if label == THIS_RUN:
        matched = SECO_SETS.get((spec.collect.locations, spec.collect.timestamps))
        return {"backbone": spec.pretrain.backbone, "pretraining": matched if spec.pretrain.method == "seco" else None}
    if label in ("random", "imagenet"):
        return {"backbone": spec.pretrain.backbone, "pretraining": None}
    properties = weights.show(store.storage(own=spec.storage), label)["properties"]
    return {
        "backbone": properties["secoctl:backbone"],
        "pretraining": properties.get("secoctl:provenance", {}).get("pretraining"),
    }
