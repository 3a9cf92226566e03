"""`load(..., bands=[...])` and `weights export --bands`: weights over the user's bands, each stem column taken by
band name (or alias), else by nearest wavelength, else new (zero); never by position."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from secoctl import weights
from secoctl.errors import UserError
from secoctl.model_card import IMAGENET_MEAN, IMAGENET_STD
from tests.conftest import run_cli
from tests.weights.conftest import backbone_state
from tests.weights.test_bands import TWELVE, twelve_band_state
from tests.weights.test_export import assert_same_features, exported_model


@pytest.fixture
def twelve(tmp_path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """(storage, state) of 12-band weights published as ms:1."""
    state = twelve_band_state()
    save_file(state, str(tmp_path / "ms.safetensors"))
    storage = (tmp_path / "store").as_uri()
    weights.push(storage, tmp_path / "ms.safetensors", "ms", "1", bands=TWELVE)
    return storage, state


def columns(state: dict[str, torch.Tensor], bands: list[str]) -> torch.Tensor:
    return state["conv1.weight"][:, [TWELVE.index(band) for band in bands]]


def test_bands_are_selected_by_name_in_the_user_s_order_and_through_aliases(twelve):
    storage, state = twelve
    model, transform = weights.load("ms:1", storage=storage, bands=["nir08", "B2", "b04", "B1", "SR_B6"])
    torch.testing.assert_close(model.conv1.weight, columns(state, ["B8A", "B02", "B04", "B01", "B11"]), atol=0, rtol=0)
    reference, reference_transform = weights.load("ms:1", storage=storage)
    reflectance = torch.randint(0, 6000, (12, 16, 16))
    chosen = reflectance[[TWELVE.index(band) for band in ("B8A", "B02", "B04", "B01", "B11")]]
    torch.testing.assert_close(
        transform(chosen),
        reference_transform(reflectance)[[TWELVE.index(band) for band in ("B8A", "B02", "B04", "B01", "B11")]],
        atol=0,
        rtol=0,
    )


def test_rgb_weights_read_the_other_order_by_name_with_each_band_s_imagenet_statistics(tmp_path: Path):
    storage = (tmp_path / "store").as_uri()
    state = backbone_state()
    save_file(state, str(tmp_path / "rgb.safetensors"))
    weights.push(storage, tmp_path / "rgb.safetensors", "rgb", "1")
    model, transform = weights.load("rgb:1", storage=storage, bands=["blue", "green", "red"])
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"].flip(1), atol=0, rtol=0)
    assert transform.mean.flatten().tolist() == pytest.approx(list(reversed(IMAGENET_MEAN)))
    assert transform.std.flatten().tolist() == pytest.approx(list(reversed(IMAGENET_STD)))


def test_an_unseen_band_takes_its_nearest_band_s_column_within_the_tolerance_else_a_zero_one_and_it_is_logged(
    tmp_path: Path, caplog
):
    storage = (tmp_path / "store").as_uri()
    state = backbone_state()
    save_file(state, str(tmp_path / "rgb.safetensors"))
    weights.push(storage, tmp_path / "rgb.safetensors", "rgb", "1")
    with caplog.at_level(logging.INFO, logger="secoctl.weights.backbone"):
        model, _ = weights.load("rgb:1", storage=storage, bands=["B05", "B02", "B08"])
    stem = state["conv1.weight"]
    torch.testing.assert_close(model.conv1.weight[:, 0], stem[:, 0], atol=0, rtol=0)  # B05 0.704 µm: B04's
    torch.testing.assert_close(model.conv1.weight[:, 1], stem[:, 2], atol=0, rtol=0)
    assert not model.conv1.weight[:, 2].any()  # B08 0.842 µm: 0.177 from B04, new
    assert (
        "rgb:1 over B05, B02, B08: B05 <- column 0 (B04, nearest by wavelength (0.039 µm)); "
        "B02 <- column 2 (B02); B08 <- new (zero column)"
    ) in caplog.text


def test_dropping_a_band_equals_imputing_its_pretraining_mean(twelve):
    """Under per-band z-scoring a band fed at its value_scaling mean normalises to 0: its column adds nothing."""
    storage, _ = twelve
    kept = ["B02", "B03", "B04", "B08"]
    model, transform = weights.load("ms:1", storage=storage, bands=kept)
    full, full_transform = weights.load("ms:1", storage=storage)
    [model_input] = weights.show(storage, "ms:1")["properties"]["mlm:input"]
    means = torch.tensor([scaling["mean"] for scaling in model_input["value_scaling"]])
    reflectance = means.view(-1, 1, 1).repeat(2, 1, 40, 40).view(2, 12, 40, 40)
    observed = torch.randint(0, 6000, (2, len(kept), 40, 40)).float()
    reflectance[:, [TWELVE.index(band) for band in kept]] = observed
    with torch.no_grad():
        torch.testing.assert_close(model(transform(observed)), full(full_transform(reflectance)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "bands, message",
    [
        (["B02", "B13"], "band 'B13' is not known; known bands: B01, B02"),
        (["B8A", "nir08"], "name B8A more than once (through an alias)"),
        (["rededge"], "band 'rededge' is not known"),
        ("B02,B03", "bands='B02,B03': give a list of band names"),
    ],
    ids=["unknown", "twice", "ambiguous-common-name", "a-string"],
)
def test_a_band_load_cannot_place_is_refused_in_one_line_naming_the_known_bands_and_aliases(bands, message, twelve):
    storage, _ = twelve
    with pytest.raises(UserError, match=re.escape(message)) as raised:
        weights.load("ms:1", storage=storage, bands=bands)
    assert len(str(raised.value).splitlines()) == 1
    if "known" in message:
        assert "SR_B5" in str(raised.value) and "nir08" in str(raised.value) and "B1-B9" in str(raised.value)


def test_the_cli_refuses_an_unknown_export_band_in_one_line(twelve, tmp_path: Path):
    storage, _ = twelve
    result = run_cli(
        "weights",
        "export",
        "ms:1",
        "--format",
        "timm",
        "--bands",
        "B02,B13",
        "-o",
        str(tmp_path / "out"),
        "--storage",
        storage,
        timeout=300,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "band 'B13' is not known; known bands: B01" in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["timm", "torchgeo", "hf"])
def test_an_export_over_other_bands_keeps_their_order_and_carries_their_item(fmt: str, twelve, tmp_path: Path):
    storage, state = twelve
    order = ["B08", "B04", "B03", "B02", "SR_B7"]
    result = run_cli(
        "weights",
        "export",
        "ms:1",
        "--format",
        fmt,
        "--bands",
        ",".join(order),
        "-o",
        str(tmp_path / "out"),
        "--storage",
        storage,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    exported = exported_model(fmt, tmp_path / "out")
    torch.testing.assert_close(
        exported.conv1.weight, columns(state, ["B08", "B04", "B03", "B02", "B12"]), atol=0, rtol=0
    )
    model, transform = weights.load("ms:1", storage=storage, bands=order)
    assert_same_features(exported, model, transform(torch.randint(0, 6000, (2, 5, 48, 48))))
    item = json.loads((tmp_path / "out" / "item.json").read_text())
    assert item["properties"]["secoctl:input"]["bands"] == order
    assert [band["name"] for band in item["properties"]["mlm:input"][0]["bands"]] == order
    assert item["properties"]["secoctl:provenance"]["adapted_from"] == "ms-1"
    assert weights.parse_item(json.dumps(item), "item.json")["id"] == "ms-b08-b04-b03-b02-srb7-1"
    if fmt == "torchgeo":
        assert json.loads((tmp_path / "out" / "meta.json").read_text())["meta"]["bands"] == [
            "B8",
            "B4",
            "B3",
            "B2",
            "SR_B7",
        ]
    elif fmt == "hf":
        config = json.loads((tmp_path / "out" / "config.json").read_text())
        assert config["secoctl:input"]["bands"] == order
    else:
        assert load_file(str(tmp_path / "out" / "model.safetensors"))["conv1.weight"].shape[1] == 5
