"""The torch side of published weights: the jobs, and `secoctl.weights.load` (lazily), build backbones here."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file
from torch import nn


def build_backbone(name: str, weights: Path | None = None) -> nn.Module:
    """torchvision ResNet with fc = Identity (pooled features); weights loaded strictly when given."""
    model = getattr(torchvision.models, name)(weights=None)
    model.fc = nn.Identity()
    if weights is not None:
        model.load_state_dict(load_file(str(weights)), strict=True)
    return model.eval()


class ReflectanceInput(nn.Module):
    """Reflectance × 10000 → the reference's per-band stretch to [0, 1] → ImageNet normalisation → size
    (size None keeps the input's, as dense tasks need)."""

    def __init__(self, stretch: list[list[float]], mean: list[float], std: list[float], size: int | None,
                 resize: str = "bilinear"):
        super().__init__()
        self.resize = resize
        self.register_buffer("low", torch.tensor([s[0] for s in stretch]).view(3, 1, 1))
        self.register_buffer("high", torch.tensor([s[1] for s in stretch]).view(3, 1, 1))
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1))
        self.size = size

    def forward(self, reflectance: torch.Tensor) -> torch.Tensor:
        # The reference quantised the stretched value to uint8 before normalising; so do we.
        unit = ((reflectance.float() - self.low) / (self.high - self.low)).clamp(0, 1)
        unit = torch.round(unit * 255) / 255
        batched = unit if unit.dim() == 4 else unit.unsqueeze(0)
        if self.size is not None and batched.shape[-2:] != (self.size, self.size):
            batched = nn.functional.interpolate(batched, size=(self.size, self.size), mode=self.resize,
                                                align_corners=False, antialias=self.resize == "bilinear")
            batched = batched.clamp(0, 1)  # bicubic overshoots; PIL's clips to the 8-bit range
        normalised = (batched - self.mean) / self.std
        return normalised if unit.dim() == 4 else normalised[0]
