"""The backbones an evaluation compares: this run's, random init, ImageNet, published weights."""

from __future__ import annotations

from torch import nn

from jobs.common.backbone import build_backbone
from jobs.common.part import Part
from jobs.pretrain import checkpoints
from secoctl import store, weights

THIS_RUN = "this-run"


def this_run(part: Part, name: str) -> nn.Module:
    tensors, _ = checkpoints.final_backbone(part.stage_tree("pretrain").path("checkpoints"), name)
    model = build_backbone(name)
    model.load_state_dict(tensors, strict=True)
    return model


def baseline(label: str, name: str, storage: str) -> nn.Module:
    """'random' (seeded), 'imagenet' (torchvision's supervised weights) or a published NAME[:VERSION]."""
    import torch
    import torchvision

    if label == "random":
        torch.manual_seed(0)
        return build_backbone(name)
    if label == "imagenet":
        enum = {"resnet18": torchvision.models.ResNet18_Weights, "resnet50": torchvision.models.ResNet50_Weights}[name]
        model = getattr(torchvision.models, name)(weights=enum.IMAGENET1K_V1)  # downloads once into torch's cache
        model.fc = nn.Identity()
        return model.eval()
    model, _ = weights.load(label, storage=storage)
    return model


def candidates(part: Part, labels: list[str]) -> dict[str, nn.Module]:
    spec = part.experiment.spec
    storage = spec.storage or store.default_storage()
    return {THIS_RUN: this_run(part, spec.pretrain.backbone),
            **{label: baseline(label, spec.pretrain.backbone, storage) for label in labels}}
