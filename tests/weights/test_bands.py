"""Weights over N input bands: the stem, and the item that says which bands and how each is stretched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from jobs.pretrain.seco import SeCo
from secoctl import weights
from secoctl.errors import UserError
from secoctl.model_card import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    REFERENCE_RULE,
    RGB_BANDS,
    SSL4EO_RULE,
    SSL4EO_S2_L2A_MEAN,
    SSL4EO_S2_L2A_STD,
    model_item,
    stretch,
)
from secoctl.weights import published
from secoctl.weights.backbone import build_backbone
from tests.conftest import run_cli


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
        "bands": ["B04", "B03", "B02"],
        "reflectance_scale": 10_000,
        "stretch": {
            "B04": [0.0, 129 * 10_000 / 255],
            "B03": [2 * 10_000 / 255, 103 * 10_000 / 255],
            "B02": [3 * 10_000 / 255, 88 * 10_000 / 255],
        },
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "size": 224,
    }
    assert set(described["stretch_rule"].values()) == {REFERENCE_RULE}
    [rgb_input] = rgb["properties"]["mlm:input"]
    assert rgb_input["name"] == "Sentinel-2 L2A RGB" and rgb_input["input"]["shape"] == [-1, 3, 224, 224]
    assert rgb_input["description"].startswith("Surface reflectance × 10000 of B04, B03, B02; each band min-max")

    bands = ["B02", "B03", "B04", "B08", "B11"]
    item = model_item("w", "1", "resnet18", 224, 1, {}, bands=bands)
    described = item["properties"]["secoctl:input"]
    assert described["bands"] == bands and described["mean"] == [0.0] * 5 and described["std"] == [1.0] * 5
    low, high = described["stretch"]["B11"]
    assert (low, high) == (
        SSL4EO_S2_L2A_MEAN["B11"] - 2 * SSL4EO_S2_L2A_STD["B11"],
        SSL4EO_S2_L2A_MEAN["B11"] + 2 * SSL4EO_S2_L2A_STD["B11"],
    )
    assert described["stretch"]["B04"] == list(stretch("B04")) and described["stretch_rule"]["B04"] == REFERENCE_RULE
    assert described["stretch_rule"]["B08"] == SSL4EO_RULE
    [model_input] = item["properties"]["mlm:input"]
    assert [band["name"] for band in model_input["bands"]] == bands and model_input["input"]["shape"] == [
        -1,
        5,
        224,
        224,
    ]


def test_evaluates_random_baseline_reads_the_runs_bands():
    from jobs.evaluate.backbones import baseline

    assert baseline("random", "resnet18", storage="", in_chans=12).conv1.weight.shape == (64, 12, 7, 7)
    assert baseline("random", "resnet18", storage="").conv1.weight.shape == (64, 3, 7, 7)


TWELVE = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def twelve_band_state(seed: int = 6) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_backbone("resnet18", in_chans=12).state_dict()


@pytest.mark.parametrize(
    "bands, message",
    [
        (
            None,
            "conv1.weight takes 12 input channels but the bands are B04, B03, B02 (3); name them in the stem's "
            "order with --bands",
        ),
        (
            "B02,B03,B04",
            "conv1.weight takes 12 input channels but the bands are B02, B03, B04 (3); list that many with --bands",
        ),
        ("B02,B10", "--bands 'B02,B10': B10 is not a band weights can carry; give comma-separated names of B01, B02"),
        ("B02,B02", "--bands 'B02,B02' names a band twice"),
    ],
    ids=["default-rgb", "too-few", "unknown", "repeated"],
)
def test_push_refuses_bands_that_disagree_with_conv1_in_one_line_and_publishes_nothing(bands, message, tmp_path: Path):
    save_file(twelve_band_state(), str(tmp_path / "ms.safetensors"))
    store = tmp_path / "store"
    result = run_cli(
        "weights",
        "push",
        str(tmp_path / "ms.safetensors"),
        "--name",
        "ms",
        "--version",
        "1",
        *(() if bands is None else ("--bands", bands)),
        "--storage",
        store.as_uri(),
        timeout=300,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not store.exists()


def test_pushed_and_imported_12_band_weights_load_as_12_bands_with_each_band_s_normalisation(tmp_path: Path):
    state = twelve_band_state()
    save_file(state, str(tmp_path / "ms.safetensors"))
    torch.save({**state, "fc.weight": torch.randn(10, 512)}, tmp_path / "ms.pth")
    storage = (tmp_path / "store").as_uri()
    for command in (
        ("push", str(tmp_path / "ms.safetensors"), "--version", "1"),
        ("import", str(tmp_path / "ms.pth"), "--format", "torchgeo", "--version", "2"),
    ):
        result = run_cli(
            "weights", *command, "--name", "ms", "--bands", ",".join(TWELVE), "--storage", storage, timeout=300
        )
        assert result.returncode == 0, result.stderr
    reference = build_backbone("resnet18", in_chans=12)
    reference.load_state_dict(state)
    reflectance = torch.randint(0, 6000, (2, 12, 48, 48))
    for version in ("1", "2"):
        item = weights.show(storage, f"ms:{version}")
        described = item["properties"]["secoctl:input"]
        assert described["bands"] == list(TWELVE)
        assert described["stretch"] == {band: list(stretch(band)) for band in TWELVE}
        model, transform = weights.load(f"ms:{version}", storage=storage)
        assert model.conv1.weight.shape == (64, 12, 7, 7)
        with torch.no_grad():
            torch.testing.assert_close(model(transform(reflectance)), reference(transform(reflectance)))
        [model_input] = item["properties"]["mlm:input"]
        assert [band["name"] for band in model_input["bands"]] == list(TWELVE)
        assert model_input["input"]["shape"] == [-1, 12, 224, 224]


@pytest.mark.parametrize("bands", [RGB_BANDS, ("B02", "B03", "B04", "B08", "B11")], ids=["rgb", "five"])
def test_the_mlm_input_gives_each_band_s_stretch_and_normalisation_as_the_z_score_the_transform_applies(bands):
    item = model_item("w", "1", "resnet18", 32, 1, {}, bands=bands)
    [model_input] = item["properties"]["mlm:input"]
    scaling = model_input["value_scaling"]
    assert [s["type"] for s in scaling] == ["z-score"] * len(bands)
    described = item["properties"]["secoctl:input"]
    # Reflectance inside every band's stretch, where the transform's clip does nothing.
    low = torch.tensor([described["stretch"][b][0] for b in bands]).view(-1, 1, 1)
    high = torch.tensor([described["stretch"][b][1] for b in bands]).view(-1, 1, 1)
    reflectance = low + (high - low) * torch.rand(len(bands), 32, 32)
    mean = torch.tensor([s["mean"] for s in scaling]).view(-1, 1, 1)
    stddev = torch.tensor([s["stddev"] for s in scaling]).view(-1, 1, 1)
    std = torch.tensor(described["std"]).view(-1, 1, 1)
    # The transform also rounds to 1/255 before normalising: at most half a step apart.
    difference = (weights.input_transform(item)(reflectance) - (reflectance - mean) / stddev).abs()
    assert (difference <= 0.5 / 255 / std + 1e-5).all()


def item_with(**changes) -> str:
    item = model_item("w", "1", "resnet18", 224, 1, {}, bands=("B02", "B03", "B08"))
    item["properties"]["secoctl:input"].update(changes)
    return json.dumps(item)


@pytest.mark.parametrize(
    "changes",
    [
        {"bands": ["B02", "B03", "B13"]},
        {"bands": ["B02", "B02", "B08"]},
        {"mean": [0.0, 0.0]},
        {"std": [1.0, 0.0, 1.0]},
        {"stretch": {"B02": [1, 2], "B03": [5, 5], "B08": [1, 2]}},
        {"stretch": {"B02": [1, 2], "B03": [1, 2, 3], "B08": [1, 2]}},
        {"stretch": {"B02": [1, 2], "B03": [1, 2]}},
        {"mean": [0.0, float("nan"), 0.0]},
        {"bands": "B02B03B08"},
    ],
    ids=[
        "unknown",
        "repeated",
        "lengths",
        "zero-std",
        "empty-stretch",
        "stretch-of-three",
        "no-stretch",
        "nan",
        "not-a-list",
    ],
)
def test_parse_item_refuses_bands_and_normalisation_load_could_not_apply(changes):
    assert published.parse_item(item_with(), "w:1: item.json")["properties"]["secoctl:input"]["bands"] == [
        "B02",
        "B03",
        "B08",
    ]
    with pytest.raises(UserError, match="w:1: item.json is not a secoctl model item"):
        published.parse_item(item_with(**changes), "w:1: item.json")
