"""`secoctl weights export`: every format loads into the lock's real timm and torchgeo with strict keys and gives
the features of `secoctl.weights.load`'s model, for pushed, imported (SeCo release) and 12-band weights."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchgeo.models
import torchvision
from safetensors.torch import load_file, save_file

from secoctl import weights
from secoctl.errors import UserError
from secoctl.model_card import model_item
from secoctl.weights import exporting, seco_releases
from secoctl.weights.backbone import reflectance_input_class
from tests.conftest import ROOT, run_cli
from tests.weights.conftest import backbone_state, made_release

ATOL = 1e-6


def published(kind: str, tmp_path: Path) -> tuple[str, str]:
    """(storage, NAME:VERSION) of a pushed ResNet-18, or of a made SeCo-release ResNet-50 that `weights import`
    converted."""
    storage = (tmp_path / "store").as_uri()
    if kind == "pushed-resnet18":
        save_file(backbone_state("resnet18", seed=1), str(tmp_path / "backbone.safetensors"))
        weights.push(storage, tmp_path / "backbone.safetensors", "rn18", "1")
        return storage, "rn18:1"
    ckpt = made_release(tmp_path, backbone_state("resnet50", seed=2), "seco_resnet50_1m.ckpt")
    releases = {seco_releases.md5_of(ckpt): seco_releases.Release("seco_resnet50_1m", "resnet50", "seco-1m")}
    weights.import_checkpoint(storage, ckpt, "seco-ckpt", "seco-rn50", "1", releases=releases)
    return storage, "seco-rn50:1"


def exported_model(fmt: str, folder: Path) -> torch.nn.Module:
    """The export loaded as its README line says, each loader with strict keys."""
    if fmt == "timm":
        cfg = json.loads((folder / "pretrained_cfg.json").read_text())
        model = timm.create_model(cfg["architecture"], pretrained=True, pretrained_cfg_overlay=cfg)
        bare = timm.create_model(cfg["architecture"], num_classes=0, in_chans=cfg["input_size"][0])
        bare.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    elif fmt == "torchgeo":
        meta = json.loads((folder / "meta.json").read_text())["meta"]
        model = getattr(torchgeo.models, meta["model"])(weights=None, in_chans=meta["in_chans"], num_classes=0)
        model.load_state_dict(torch.load(folder / "model.pth", weights_only=True), strict=True)
    else:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    return model.eval()


def assert_same_features(exported: torch.nn.Module, reference: torch.nn.Module, batch: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(exported(batch), reference.eval()(batch), atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["pushed-resnet18", "seco-release-resnet50"])
@pytest.mark.parametrize("fmt", ["timm", "torchgeo", "hf"])
def test_each_export_loads_strictly_with_load_s_features(fmt: str, kind: str, tmp_path: Path):
    storage, ref = published(kind, tmp_path)
    assert weights.export(storage, ref, fmt, tmp_path / "out") == ref
    model, transform = weights.load(ref, storage=storage)
    batch = transform(torch.randint(0, 6000, (2, 3, 48, 48)))
    assert_same_features(exported_model(fmt, tmp_path / "out"), model, batch)


def test_torchgeo_meta_carries_torchgeo_s_keys_and_the_transform_is_load_s(tmp_path: Path):
    storage, ref = published("seco-release-resnet50", tmp_path)
    weights.export(storage, ref, "torchgeo", tmp_path / "out")
    exported = json.loads((tmp_path / "out" / "meta.json").read_text())
    torchgeo_own = torchgeo.models.ResNet50_Weights.SENTINEL2_RGB_SECO.meta
    assert set(torchgeo_own) <= set(exported["meta"])
    assert {key: exported["meta"][key] for key in ("in_chans", "model", "ssl_method", "bands", "publication")} == {
        key: torchgeo_own[key] for key in ("in_chans", "model", "ssl_method", "bands", "publication")
    }
    assert exported["meta"]["dataset"] == "SeCo Dataset (seco-1m)"
    spec = exported["transforms"]
    rebuilt = reflectance_input_class()(
        [spec["stretch"][b] for b in spec["bands"]], spec["mean"], spec["std"], spec["size"]
    )
    _, transform = weights.load(ref, storage=storage)
    reflectance = torch.randint(0, 6000, (2, 3, 40, 40))
    torch.testing.assert_close(rebuilt(reflectance), transform(reflectance), atol=0, rtol=0)


def test_the_hub_folder_has_timm_s_layout_and_a_card_from_the_item(tmp_path: Path):
    storage, ref = published("seco-release-resnet50", tmp_path)
    weights.export(storage, ref, "hf", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architecture"] == "resnet50" and config["num_classes"] == 0
    assert config["pretrained_cfg"]["input_size"] == [3, 224, 224] and "file" not in config["pretrained_cfg"]
    card = (tmp_path / "out" / "README.md").read_text()
    for expected in (
        "library_name: timm",
        "| B04 | 0 | 5058.82 | 0.485 | 0.229 |",
        "release: seco\\_resnet50\\_1m",
        "pretraining: seco-1m",
        "md5: ",
        "STAC item: seco-rn50-1",
    ):
        assert expected in card, expected


TWELVE = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def twelve_band_item(state: dict[str, torch.Tensor]) -> dict:
    """A published item as issue 30's 12-band weights carry it: every band with its own stretch, mean and std."""
    return model_item(
        "ms12", "1", "resnet18", 224, sum(t.numel() for t in state.values()), {"pushed_from": "x"}, bands=TWELVE
    )


def twelve_band_file(tmp_path: Path) -> Path:
    torch.manual_seed(4)
    reference = torchvision.models.resnet18()
    reference.conv1 = torch.nn.Conv2d(12, 64, 7, 2, 3, bias=False)
    save_file(
        {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")},
        str(tmp_path / "model.safetensors"),
    )
    return tmp_path / "model.safetensors"


@pytest.mark.parametrize("fmt", ["timm", "torchgeo", "hf"])
def test_a_pushed_12_band_backbone_exports_with_in_chans_12_and_load_s_features(fmt: str, tmp_path: Path):
    """`weights push --bands`, then `weights export` through the CLI: what a user of 12-band weights runs."""
    storage = (tmp_path / "store").as_uri()
    pushed = run_cli(
        "weights",
        "push",
        str(twelve_band_file(tmp_path)),
        "--name",
        "ms12",
        "--version",
        "1",
        "--bands",
        ",".join(TWELVE),
        "--storage",
        storage,
        timeout=300,
    )
    assert pushed.returncode == 0, pushed.stderr
    result = run_cli(
        "weights", "export", "ms12:1", "--format", fmt, "-o", str(tmp_path / "out"), "--storage", storage, timeout=300
    )
    assert result.returncode == 0, result.stderr
    model, transform = weights.load("ms12:1", storage=storage)
    assert model.conv1.weight.shape == (64, 12, 7, 7)
    batch = transform(torch.randint(0, 6000, (2, 12, 64, 64)))
    exported = exported_model(fmt, tmp_path / "out")
    assert_same_features(exported, model, batch)
    spec = weights.show(storage, "ms12:1")["properties"]["secoctl:input"]
    assert spec["bands"] == list(TWELVE)
    if fmt == "torchgeo":
        meta = json.loads((tmp_path / "out" / "meta.json").read_text())
        assert meta["meta"]["in_chans"] == 12 and meta["meta"]["bands"][:2] == ["B1", "B2"]
        assert meta["meta"]["bands"][8] == "B8A" and meta["transforms"]["std"] == spec["std"]
        assert meta["transforms"]["stretch"] == spec["stretch"]
    else:
        assert exported.pretrained_cfg["input_size"][0] == 12
        assert list(exported.pretrained_cfg["mean"]) == spec["mean"]
        assert list(exported.pretrained_cfg["std"]) == spec["std"]
    if fmt == "hf":
        card = (tmp_path / "out" / "README.md").read_text()
        low, high = spec["stretch"]["B8A"]
        assert f"| B8A | {low:g} | {high:g} | 0 | 1 |" in card


def test_a_stage_published_12_band_version_exports_its_experiment_and_metrics(tmp_path: Path):
    """The publish stage's own call (`publish_backbone` with the experiment's provenance, metrics and bands)."""
    storage = (tmp_path / "store").as_uri()
    weights.publish_backbone(
        storage,
        twelve_band_file(tmp_path),
        "ms12",
        "1",
        "resnet18",
        224,
        1,
        {
            "experiment": "ms",
            "checkpoint_step": 10,
            "method": "seco",
            "spec": {"spec": {"collect": {"source": "planetary-computer", "locations": 256}}},
        },
        {"eurosat-linear": {"metric": "accuracy", "results": {"seco": {"accuracy": 0.71}}}},
        bands=TWELVE,
    )
    weights.export(storage, "ms12:1", "hf", tmp_path / "hf")
    weights.export(storage, "ms12:1", "torchgeo", tmp_path / "tg")
    assert "| eurosat-linear | accuracy | seco | 0.7100 |" in (tmp_path / "hf" / "README.md").read_text()
    meta = json.loads((tmp_path / "tg" / "meta.json").read_text())["meta"]
    assert meta["dataset"] == "secoctl experiment ms (planetary-computer, 256 locations)" and meta["in_chans"] == 12


@pytest.mark.parametrize(
    "dropped, bands, message",
    [
        (None, 12, "conv1 takes 3 channels but item.json's secoctl:input lists 12 bands"),
        ("layer4.1.bn2.weight", 3, "timm's resnet18 refuses these weights: Error(s) in loading state_dict"),
        ("conv1.weight", 3, "model.safetensors has no conv1.weight"),
    ],
    ids=["bands", "missing-key", "no-conv1"],
)
def test_weights_an_export_cannot_carry_are_refused_in_one_line_and_nothing_is_written(
    dropped, bands, message, tmp_path: Path
):
    state = backbone_state("resnet18")
    item = twelve_band_item(state)
    if bands == 3:
        item = model_item("w", "1", "resnet18", 224, 1, {"pushed_from": "x"})
    save_file({k: v for k, v in state.items() if k != dropped}, str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError, match=re.escape(message)) as raised:
        exporting.export_files(item, tmp_path / "model.safetensors", "timm", tmp_path / "out")
    assert len(str(raised.value).splitlines()) == 1
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out-*"))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out-*"))


def test_the_cli_exports_and_refuses_bad_input_in_one_line(tmp_path: Path):
    storage, ref = published("pushed-resnet18", tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    for args, message in [
        (("rn18", "--format", "onnx", "-o", str(tmp_path / "a")), "--format 'onnx' is not one of timm, torchgeo, hf"),
        (("rn18", "--format", "timm", "-o", str(tmp_path / "full")), "is not an empty folder"),
        (("nothing", "--format", "timm", "-o", str(tmp_path / "b")), "no published weights named 'nothing'"),
    ]:
        result = run_cli("weights", "export", *args, "--storage", storage, timeout=300)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    result = run_cli(
        "weights", "export", "rn18", "--format", "timm", "-o", str(tmp_path / "out"), "--storage", storage, timeout=300
    )
    assert result.returncode == 0 and f"rn18:1 exported for timm to {tmp_path / 'out'}" in result.stdout, result.stderr


def test_importing_the_export_modules_loads_no_torch():
    code = (
        "import sys, secoctl.weights.exporting, secoctl.weights.formats, secoctl.weights.cli; "
        "print(sorted(m for m in ('torch', 'timm', 'torchgeo') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"
