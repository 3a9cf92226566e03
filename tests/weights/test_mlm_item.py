"""Published items are valid STAC MLM items: checked offline against the released JSON schema of the MLM version
they declare (and of the EO extension that describes their bands), kept in tests/data/stac-schemas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch
from referencing import Registry, Resource
from safetensors.torch import save_file

from secoctl import weights
from secoctl.model_card import BAND_TABLE, model_item
from tests.conftest import ROOT
from tests.weights.conftest import backbone_state
from tests.weights.test_bands import TWELVE, twelve_band_state
from tests.weights.test_export_compat import installed

SCHEMAS = ROOT / "tests" / "data" / "stac-schemas"
# URL → file: what the items declare and what the MLM schema refers to.
HELD = {
    "https://stac-extensions.github.io/mlm/v1.5.2/schema.json": "mlm-v1.5.2.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json": "eo-v1.1.0.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json": "raster-v1.1.0.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json": "processing-v1.1.0.json",
}


def schema(url: str) -> dict:
    return json.loads((SCHEMAS / HELD[url]).read_text())


REGISTRY = Registry().with_resources((url, Resource.from_contents(schema(url))) for url in HELD)


def schema_errors(item: dict) -> list[str]:
    """Every error of `item` against each extension schema it declares (all of which must be held here)."""
    declared = list(item["stac_extensions"])
    assert set(declared) <= set(HELD), f"no held schema for {set(declared) - set(HELD)}"
    errors = []
    for url in declared:
        validator = jsonschema.Draft7Validator(schema(url), registry=REGISTRY)
        errors += [f"{url}: {error.json_path}: {error.message[:200]}" for error in validator.iter_errors(item)]
    return errors


def published_item(bands, tmp_path: Path) -> dict:
    """The item `weights push` publishes, as `weights show` returns it."""
    storage = (tmp_path / "store").as_uri()
    state = backbone_state() if bands is None else twelve_band_state()
    save_file(state, str(tmp_path / "w.safetensors"))
    weights.push(storage, tmp_path / "w.safetensors", "w", "1", bands=bands)
    return weights.show(storage, "w:1")


@pytest.mark.parametrize("bands", [None, TWELVE], ids=["rgb", "twelve"])
def test_a_published_item_validates_against_the_mlm_and_eo_schemas_it_declares(bands, tmp_path: Path):
    item = published_item(bands, tmp_path)
    assert "https://stac-extensions.github.io/mlm/v1.5.2/schema.json" in item["stac_extensions"]
    assert schema_errors(item) == []


# MLM's own pydantic model: the item's mlm: fields, refused with a ValidationError.
STAC_MODEL_CHECK = """
import json, sys
from stac_model.schema import MLModelProperties
item = json.load(open(sys.argv[1]))
MLModelProperties.model_validate({key: value for key, value in item["properties"].items() if key.startswith("mlm:")})
"""


@pytest.mark.parametrize("bands", [None, TWELVE], ids=["rgb", "twelve"])
def test_a_published_item_validates_against_stac_model(bands, tmp_path: Path):
    """stac-model 0.7.0 (the extension's pydantic model, not a dependency: installed into the compat cache)."""
    item = published_item(bands, tmp_path)
    target = installed("stac-model", "0.7.0")
    environment = dict(os.environ, PYTHONPATH=str(target))
    for written, valid in ((item, True), (broken_resize(item), False)):
        (tmp_path / "item.json").write_text(json.dumps(written))
        result = subprocess.run(
            [sys.executable, "-c", STAC_MODEL_CHECK, str(tmp_path / "item.json")],
            capture_output=True,
            text=True,
            env=environment,
            timeout=300,
        )
        assert (result.returncode == 0) == valid, result.stderr[-2000:]
        assert valid or "ValidationError" in result.stderr


def broken_resize(item: dict) -> dict:
    broken = json.loads(json.dumps(item))
    broken["properties"]["mlm:input"][0]["resize_type"] = "interpolate-linear"
    return broken


@pytest.mark.parametrize("bands", [None, TWELVE], ids=["rgb", "twelve"])
def test_the_model_asset_describes_each_input_band_in_tensor_order_with_esa_s_wavelengths(bands, tmp_path: Path):
    item = published_item(bands, tmp_path)
    [model_input] = item["properties"]["mlm:input"]
    names = [band["name"] for band in model_input["bands"]]
    assert names == list(bands or ("B04", "B03", "B02"))
    described = item["assets"]["weights"]["eo:bands"]
    assert [band["name"] for band in described] == names
    for band in described:
        assert (band["common_name"], band["center_wavelength"], band["full_width_half_max"]) == BAND_TABLE[band["name"]]
    assert model_input["resize_type"] == "interpolation-linear"
    assert model_input["input"]["dim_order"] == ["batch", "bands", "height", "width"]
    assert [scaling["type"] for scaling in model_input["value_scaling"]] == ["z-score"] * len(names)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda item: item.update(broken_resize(item)), "resize_type"),
        (lambda item: item["assets"]["weights"].pop("eo:bands"), "eo:bands"),
        (lambda item: item["properties"]["mlm:input"][0]["value_scaling"][0].pop("stddev"), "value_scaling"),
    ],
    ids=["resize-type", "no-band-objects", "value-scaling"],
)
def test_the_held_schema_refuses_what_the_items_once_wrote(change, message):
    item = json.loads(json.dumps(model_item("w", "1", "resnet18", 224, 1, {}, bands=TWELVE)))
    assert schema_errors(item) == []
    change(item)
    assert schema_errors(item), message


def test_an_item_written_before_band_objects_still_loads():
    item = model_item("w", "1", "resnet18", 224, 1, {}, bands=TWELVE)
    item["stac_extensions"] = ["https://stac-extensions.github.io/mlm/v1.4.0/schema.json"]
    item["assets"]["weights"].pop("eo:bands")
    item["properties"]["mlm:input"][0].update(resize_type="interpolate-linear")
    item["properties"]["mlm:input"][0]["input"]["dim_order"] = ["batch", "channel", "height", "width"]
    parsed = weights.parse_item(json.dumps(item), "w:1: item.json")
    assert weights.input_transform(parsed)(torch.zeros(12, 8, 8)).shape == (12, 224, 224)


def test_an_item_for_weights_adapted_to_other_bands_validates_too():
    from secoctl.weights import bands

    item = model_item("w12", "1", "resnet18", 224, 1, {}, bands=TWELVE)
    found = bands.sources(list(TWELVE), ["SR_B5", "B04", "B10"])
    adapted = bands.adapted_item(item, found, 1)
    assert [band["name"] for band in adapted["assets"]["weights"]["eo:bands"]] == ["SR_B5", "B04", "B10"]
    assert schema_errors(adapted) == []
