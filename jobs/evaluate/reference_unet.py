"""The reference's change-detection network (models/segmentation.py, as main_oscd.py builds it).

The backbone as torchvision's child sequence (conv1, bn1, relu, maxpool, layer1-4: the reference's
`encoder_q` indices 0-7); both dates pass through it and the features of conv1 (index 0, before its
BatchNorm) and layer1-4 (indices 4-7) are fused as |f1 - f2|. The head upsamples by nearest
neighbour, convolves, concatenates the next finer feature, convolves again without bias, then
BatchNorm, ReLU and Dropout2d(0.3) at every scale; a final nearest upsampling and a 1×1 convolution
give one change logit per pixel.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

FEATURE_INDICES = (0, 4, 5, 6, 7)
FEATURE_CHANNELS = {"resnet18": (64, 64, 128, 256, 512), "resnet50": (64, 256, 512, 1024, 2048)}
DROPOUT = 0.3


def encoder_of(backbone: nn.Module) -> nn.Sequential:
    """torchvision ResNet -> the reference's Sequential up to layer4 (the same modules, shared)."""
    return nn.Sequential(
        backbone.conv1,
        backbone.bn1,
        backbone.relu,
        backbone.maxpool,
        backbone.layer1,
        backbone.layer2,
        backbone.layer3,
        backbone.layer4,
    )


class DifferenceEncoder(nn.Module):
    """|f1 - f2| at each of FEATURE_INDICES (models/segmentation.py SegmentationEncoder, diff=True)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.encoder = encoder_of(backbone)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, module in enumerate(self.encoder):
            before, after = module(before), module(after)
            if index in FEATURE_INDICES:
                features.append(torch.abs(before - after))
        return features


class ReferenceUNet(nn.Module):
    def __init__(self, backbone: nn.Module, name: str):
        super().__init__()
        channels = FEATURE_CHANNELS[name]
        self.encoder = DifferenceEncoder(backbone)
        self.dropout = nn.Dropout2d(DROPOUT)
        self.shrink = nn.ModuleList(
            nn.Conv2d(channels[i + 1], channels[i], 3, padding=1) for i in range(len(channels) - 1)
        )
        self.merge = nn.ModuleList(
            nn.Conv2d(2 * channels[i], channels[i], 3, padding=1, bias=False) for i in range(len(channels) - 1)
        )
        self.norm = nn.ModuleList(nn.BatchNorm2d(channels[i]) for i in range(len(channels) - 1))
        self.out = nn.Conv2d(channels[0], 1, kernel_size=1)

    def head_parameters(self) -> list[nn.Parameter]:
        """What main_oscd.py optimises: every parameter but the encoder's."""
        encoder = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in encoder]

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        features = self.encoder(before, after)
        x = features[-1]
        for i in range(len(features) - 2, -1, -1):
            x = self.shrink[i](F.interpolate(x, scale_factor=2, mode="nearest"))
            skip = features[i]
            if skip.shape[-1] != x.shape[-1]:
                skip = F.interpolate(skip, scale_factor=2, mode="nearest")
            x = self.dropout(F.relu(self.norm[i](self.merge[i](torch.cat([x, skip], 1)))))
        return self.out(F.interpolate(x, scale_factor=2, mode="nearest"))[:, 0]
