"""What each downstream task's model sees under recipe paper (the reference's datasets/*), and under modern.

paper: EuroSAT at its native 64 px, 8-bit RGB scaled to [0, 1] (ToTensor only; the RGB bands are
rendered to 8 bits by the SeCo stretch, standing in for the RGB JPEG release); BigEarthNet stretched
per band over mean ± 2σ of its own statistics to 8 bits, resized bicubic to 128 px; OSCD stretched
by its own quantiles to 8 bits at 10 m. None of them ImageNet-normalised.
modern: every task gets the pretrain input (SeCo stretch, ImageNet normalisation, the pretrain
input size; OSCD at its native size).
multispectral: each model gets its own input (`own_input`): the bands it was trained on, picked by
name from the task's images (datasets.band_indices), stretched and normalised as its metadata says,
at its input size (OSCD at its native size).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from jobs.common.backbone import ReflectanceInput
from jobs.evaluate import datasets
from secoctl.model_card import RGB_BANDS, input_description

# datasets/oscd_dataset.py QUANTILES, reflectance × 10000.
OSCD_QUANTILES = {"B04": (426.0, 3698.0), "B03": (667.0, 2969.0), "B02": (885.0, 2620.0)}
# datasets/bigearthnet_dataset.py BAND_STATS of the RGB bands.
BIGEARTHNET_MEAN = {"B04": 590.23569706, "B03": 614.21682446, "B02": 429.9430203}
BIGEARTHNET_STD = {"B04": 675.88746967, "B03": 582.87945694, "B02": 572.41639287}
BIGEARTHNET_SIZE = 128
NO_NORMALISATION = ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])


def paper_stretch(task: str) -> list[tuple[float, float]]:
    if task == "oscd":
        return [OSCD_QUANTILES[b] for b in RGB_BANDS]
    if task == "bigearthnet":
        return [
            (BIGEARTHNET_MEAN[b] - 2 * BIGEARTHNET_STD[b], BIGEARTHNET_MEAN[b] + 2 * BIGEARTHNET_STD[b])
            for b in RGB_BANDS
        ]
    return [tuple(input_description(64)["stretch"][b]) for b in RGB_BANDS]


def transform_for(task: str, recipe: str, input_size: int, device: torch.device) -> ReflectanceInput:
    if recipe == "paper":
        size, resize = (BIGEARTHNET_SIZE, "bicubic") if task == "bigearthnet" else (None, "bilinear")
        return ReflectanceInput([list(s) for s in paper_stretch(task)], *NO_NORMALISATION, size, resize).to(device)
    described = input_description(input_size)
    size = None if task == "oscd" else input_size
    return ReflectanceInput([described["stretch"][b] for b in RGB_BANDS], described["mean"], described["std"], size).to(
        device
    )


class SelectBands(nn.Module):
    """The channels at `indices` of (…, C, H, W) images, in that order."""

    def __init__(self, indices: list[int]):
        super().__init__()
        self.register_buffer("indices", torch.tensor(indices))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.index_select(-3, self.indices)


def own_input(task: str, described: dict[str, Any], device: torch.device) -> nn.Module:
    """What a model trained on `described` (a secoctl:input) sees of `task`'s images, every band of which is loaded."""
    bands = described["bands"]
    size = None if task == "oscd" else described["size"]
    return nn.Sequential(
        SelectBands(datasets.band_indices(task, bands)),
        ReflectanceInput([described["stretch"][b] for b in bands], described["mean"], described["std"], size),
    ).to(device)
