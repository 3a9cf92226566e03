"""Weights over N input bands: the stem, and the item that says which bands and how each is stretched."""

from __future__ import annotations

import pytest
import torch
import torchvision

from jobs.pretrain.seco import SeCo
from secoctl.model_card import (IMAGENET_MEAN, IMAGENET_STD, REFERENCE_RULE, SSL4EO_RULE, SSL4EO_S2_L2A_MEAN,
                                SSL4EO_S2_L2A_STD, model_item, stretch)
from secoctl.weights.backbone import build_backbone


def test_an_rgb_backbone_draws_the_same_weights_as_before_and_n_bands_get_a_random_stem():
    torch.manual_seed(5)
    expected = torchvision.models.resnet18(weights=None).state_dict()
    torch.manual_seed(5)
    rgb = build_backbone("resnet18").state_dict()
    assert all(torch.equal(rgb[key], expected[key]) for key in rgb)
    torch.manual_seed(5)
    twelve = build_backbone("resnet18", in_chans=12)
    assert twelve.conv1.weight.shape == (64, 12, 7, 7)
    fan_out_std = (2 / (64 * 7 * 7)) ** 0.5  # torchvision's kaiming_normal_(mode="fan_out") for every convolution
    assert twelve.conv1.weight.std().item() == pytest.approx(fan_out_std, rel=0.05)
    assert twelve(torch.zeros(1, 12, 32, 32)).shape == (1, 512)
    assert SeCo("resnet18", queue_size=8, in_chans=12).encoder_q[0].weight.shape == (64, 12, 7, 7)


def test_the_rgb_item_keeps_its_values_and_an_n_band_item_names_each_band_with_its_stretch():
    rgb = model_item("w", "1", "resnet18", 224, 1, {})
    described = rgb["properties"]["secoctl:input"]
    assert {key: described[key] for key in ("bands", "reflectance_scale", "stretch", "mean", "std", "size")} == {
        "bands": ["B04", "B03", "B02"], "reflectance_scale": 10_000,
        "stretch": {"B04": [0.0, 129 * 10_000 / 255], "B03": [2 * 10_000 / 255, 103 * 10_000 / 255],
                    "B02": [3 * 10_000 / 255, 88 * 10_000 / 255]},
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "size": 224}
    assert set(described["stretch_rule"].values()) == {REFERENCE_RULE}
    [rgb_input] = rgb["properties"]["mlm:input"]
    assert rgb_input["name"] == "Sentinel-2 L2A RGB" and rgb_input["input"]["shape"] == [-1, 3, 224, 224]
    assert rgb_input["description"].startswith("Surface reflectance × 10000 of B04, B03, B02; each band min-max")

    bands = ["B02", "B03", "B04", "B08", "B11"]
    item = model_item("w", "1", "resnet18", 224, 1, {}, bands=bands)
    described = item["properties"]["secoctl:input"]
    assert described["bands"] == bands and described["mean"] == [0.0] * 5 and described["std"] == [1.0] * 5
    low, high = described["stretch"]["B11"]
    assert (low, high) == (SSL4EO_S2_L2A_MEAN["B11"] - 2 * SSL4EO_S2_L2A_STD["B11"],
                           SSL4EO_S2_L2A_MEAN["B11"] + 2 * SSL4EO_S2_L2A_STD["B11"])
    assert described["stretch"]["B04"] == list(stretch("B04")) and described["stretch_rule"]["B04"] == REFERENCE_RULE
    assert described["stretch_rule"]["B08"] == SSL4EO_RULE
    [model_input] = item["properties"]["mlm:input"]
    assert [band["name"] for band in model_input["bands"]] == bands and model_input["input"]["shape"] == [-1, 5, 224, 224]


def test_evaluates_random_baseline_reads_the_runs_bands():
    from jobs.evaluate.backbones import baseline

    assert baseline("random", "resnet18", storage="", in_chans=12).conv1.weight.shape == (64, 12, 7, 7)
    assert baseline("random", "resnet18", storage="").conv1.weight.shape == (64, 3, 7, 7)
