"""Issue 40's smaller weights defects: the model card escapes what the item says and names no local path, the
parameter count is torch's, exports get the user's umask modes and the input transform takes numpy arrays."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from safetensors.torch import save_file

from secoctl import weights
from secoctl.model_card import model_item
from secoctl.weights.formats import CARD_METADATA, model_card
from tests.weights.conftest import backbone_state

HOSTILE = "evil\n---\nlicense: mit\n<script>alert(1)</script> | *bold* [link](http://x) \x1b[31m\u2028end"


def hostile_item(tmp_path: Path) -> dict:
    spec = {
        "apiVersion": "secoctl/v1",
        "kind": "Experiment",
        "metadata": {"name": "quick"},
        "spec": {"storage": f"file://{tmp_path}/private/store", "pretrain": {"maxSteps": 3}},
    }
    item = model_item("rn18", "1", "resnet18", 224, 11176512, {"experiment": HOSTILE, "spec": spec})
    item["properties"]["mlm:name"] = HOSTILE
    return item


def test_the_card_escapes_every_item_value_and_names_no_storage_path(tmp_path: Path):
    card = model_card(hostile_item(tmp_path), 3, [])
    _, front, body = card.split("---\n", 2)
    assert yaml.safe_load(front) == CARD_METADATA
    assert "<script" not in card and "\x1b" not in card and "\u2028" not in card
    assert not any(line.startswith(("---", "license:")) for line in body.splitlines())
    assert str(tmp_path) not in card and "private/store" not in card and '"maxSteps": 3' in card
    heading = next(line for line in body.splitlines() if line.startswith("# "))
    assert heading.startswith(
        "# evil --- license: mit &lt;script&gt;alert(1)&lt;/script&gt; \\| \\*bold\\* \\[link\\](http://x)"
    )
    experiment = next(line for line in body.splitlines() if line.startswith("- experiment:"))
    assert "\\|" in experiment and "&lt;script&gt;" in experiment


def test_the_parameter_count_is_torch_s_without_the_batch_norm_buffers(tmp_path: Path):
    model = torchvision.models.resnet18()
    expected = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("fc."))
    assert expected == 11176512
    save_file(backbone_state("resnet18"), str(tmp_path / "b.safetensors"))
    storage = (tmp_path / "store").as_uri()
    weights.push(storage, tmp_path / "b.safetensors", "rn18", "1")
    _, folder = weights.pull(storage, "rn18:1")
    item = json.loads((folder / weights.ITEM_FILE).read_text())
    assert item["properties"]["mlm:total_parameters"] == expected
    weights.export(storage, "rn18:1", "hf", tmp_path / "hf")
    assert "11176512 parameters" in (tmp_path / "hf" / "README.md").read_text()
    weights.export(storage, "rn18:1", "timm", tmp_path / "adapted", bands=["B04", "B03", "B02", "B08"])
    adapted = json.loads((tmp_path / "adapted" / weights.ITEM_FILE).read_text())
    assert adapted["properties"]["mlm:total_parameters"] == expected + 64 * 7 * 7


@pytest.mark.parametrize("fmt", ["timm", "torchgeo", "hf"])
@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_exports_take_the_user_s_umask_modes(fmt: str, mask: int, tmp_path: Path):
    save_file(backbone_state("resnet18"), str(tmp_path / "b.safetensors"))
    storage = (tmp_path / "store").as_uri()
    weights.push(storage, tmp_path / "b.safetensors", "rn18", "1")
    before = os.umask(mask)
    try:
        weights.export(storage, "rn18:1", fmt, tmp_path / "out")
    finally:
        os.umask(before)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "out", *(tmp_path / "out").rglob("*")]}
    assert modes == {name: (0o777 if name == "out" else 0o666) & ~mask for name in modes}


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.float64])
def test_the_input_transform_takes_numpy_reflectance_as_it_takes_a_tensor(dtype, tmp_path: Path):
    save_file(backbone_state("resnet18"), str(tmp_path / "b.safetensors"))
    storage = (tmp_path / "store").as_uri()
    weights.push(storage, tmp_path / "b.safetensors", "rn18", "1")
    _, transform = weights.load("rn18:1", storage=storage)
    reflectance = np.random.default_rng(0).integers(0, 6000, (2, 3, 40, 40)).astype(dtype)
    out = transform(reflectance)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 224, 224)
    torch.testing.assert_close(out, transform(torch.from_numpy(reflectance.astype(np.float32))))
    assert transform(reflectance[0]).shape == (3, 224, 224)
