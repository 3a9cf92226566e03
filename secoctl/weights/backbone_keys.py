"""Renaming checkpoint keys to torchvision's ResNet names, whatever wrote the checkpoint.

Pure string work, no torch: the publish stage, `secoctl weights import` and the tests share it.
- SeCo reference (Lightning `.ckpt`) and our pretrain stage: `encoder_q.<i>.*`, where encoder_q
  is Sequential(conv1, bn1, relu, maxpool, layer1..layer4, avgpool, ...), so 0 = conv1, 1 = bn1,
  4-7 = layer1-layer4; DDP may add a leading `module.`.
- torchgeo's SeCo weights: a timm ResNet state dict, already torchvision's names, plus `fc.*`.
"""

from __future__ import annotations

from collections.abc import Iterable

ENCODER_INDEX = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
BACKBONE_ROOTS = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


def from_encoder_q(keys: Iterable[str], prefix: str = "encoder_q.") -> dict[str, str]:
    """{torchvision name: checkpoint key} for the query encoder's parameters and buffers."""
    renamed = {}
    for key in keys:
        bare = key.removeprefix("module.").removeprefix("model.")
        if not bare.startswith(prefix):
            continue
        index, _, rest = bare[len(prefix) :].partition(".")
        if index in ENCODER_INDEX:
            renamed[f"{ENCODER_INDEX[index]}.{rest}"] = key
    return renamed


def from_torchvision_like(keys: Iterable[str]) -> dict[str, str]:
    """{torchvision name: key} for a ResNet state dict in torchvision/timm names; the classifier is dropped."""
    renamed = {}
    for key in keys:
        bare = key.removeprefix("module.").removeprefix("backbone.")
        if bare.startswith(BACKBONE_ROOTS):
            renamed[bare] = key
    return renamed


def architecture(names: Iterable[str]) -> str:
    """resnet18 or resnet50, told apart by the bottleneck's third convolution."""
    names = set(names)
    if "layer1.0.conv3.weight" in names:
        return "resnet50"
    if "layer1.0.conv2.weight" in names:
        return "resnet18"
    raise ValueError("these weights are not a torchvision ResNet-18 or ResNet-50 backbone (no layer1.0.conv2.weight)")
