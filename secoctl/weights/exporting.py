"""`secoctl weights export`: published weights as timm, torchgeo and a Hugging Face Hub folder load them.

Each export is built by loading the weights into timm's own ResNet (strict keys, num_classes 0) and
writing what that model holds, so a file that timm would refuse is never written. The folder appears
whole or not at all: it is assembled beside `output` and renamed into place. torch, timm and torchgeo
are imported inside the functions only: the control plane imports this module without them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from secoctl.errors import UserError, shown
from secoctl.weights.formats import hub_config_extra, model_card, pretrained_cfg, torchgeo_meta, torchgeo_transforms
from secoctl.weights.published import EXPORT_FORMATS, ITEM_FILE, WEIGHTS_FILE, parse_item, pull

TIMM_CFG_FILE = "pretrained_cfg.json"
TORCHGEO_WEIGHTS_FILE = "model.pth"
TORCHGEO_META_FILE = "meta.json"
HF_CONFIG_FILE = "config.json"


def check_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"-o {output} already exists and is not an empty folder; name a new folder")


def export(storage: str, text: str, fmt: str, output: Path, bands: list[str] | tuple[str, ...] | None = None) -> str:
    """Pull NAME[:VERSION] (verified) and write it to `output` in `fmt`; returns the resolved NAME:VERSION. With
    `bands`, the weights adapted to them (as `load(..., bands=...)` adapts) and their new item.json go there."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"--format {shown(fmt)} is not one of {', '.join(EXPORT_FORMATS)}")
    check_output(output)
    ref, folder = pull(storage, text)
    item = parse_item((folder / ITEM_FILE).read_text(errors="replace"), f"{ref}: {ITEM_FILE}")
    if bands is None:
        export_files(item, folder / WEIGHTS_FILE, fmt, output)
        return str(ref)
    from safetensors.torch import save_file

    from secoctl.weights.backbone import adapted

    state, item = adapted(item, folder / WEIGHTS_FILE, bands, str(ref))
    with tempfile.TemporaryDirectory(prefix="secoctl-adapted-") as scratch:
        save_file(state, str(Path(scratch, WEIGHTS_FILE)))
        export_files(item, Path(scratch, WEIGHTS_FILE), fmt, output, with_item=True)
    return str(ref)


def export_files(item: dict[str, Any], weights_file: Path, fmt: str, output: Path, with_item: bool = False) -> None:
    """Write the `fmt` export of one version (its item and safetensors file) to the new folder `output`, the item
    too (as item.json) when `with_item`."""
    from safetensors import safe_open

    with safe_open(str(weights_file), "pt") as tensors:
        if "conv1.weight" not in tensors.keys():
            raise UserError(f"{item['id']}: {WEIGHTS_FILE} has no conv1.weight; it is no ResNet backbone")
        in_chans = tensors.get_slice("conv1.weight").get_shape()[1]
    output = output.resolve()
    check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}-", dir=output.parent) as scratch:
        staged = Path(scratch, "export")
        staged.mkdir()
        cfg = pretrained_cfg(item, in_chans)
        model = timm_backbone(cfg, weights_file, item["id"])
        WRITERS[fmt](model, item, in_chans, cfg, staged, output)
        if with_item:
            (staged / ITEM_FILE).write_text(json.dumps(item, indent=1))
        with_default_modes(staged)
        if output.exists():
            output.rmdir()  # empty, checked above
        staged.rename(output)


def current_umask() -> int:
    """The process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def with_default_modes(folder: Path) -> None:
    """Give `folder` and everything in it the modes a new file or folder gets under the user's umask (0644 and
    0755 under 022): safetensors writes its files 0600 and the folder was made in a 0700 temporary one."""
    mask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def timm_backbone(cfg: dict[str, Any], weights_file: Path, where: str):
    """timm's ResNet with the weights loaded by timm's own pretrained path (strict keys)."""
    import timm

    try:
        model = timm.create_model(
            cfg["architecture"], pretrained=True, pretrained_cfg_overlay={**cfg, "file": str(weights_file)}
        )
    except RuntimeError as error:  # timm's strict load_state_dict: missing, unexpected or misshapen keys
        raise UserError(
            f"{where}: timm's {cfg['architecture']} refuses these weights: {str(error).strip().splitlines()[0]}"
        ) from None
    return model.eval()


def write_timm(model, item: dict[str, Any], in_chans: int, cfg: dict[str, Any], staged: Path, output: Path) -> None:
    """model.safetensors and the pretrained_cfg overlay that points at it where the folder will be."""
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(staged / WEIGHTS_FILE))
    (staged / TIMM_CFG_FILE).write_text(json.dumps({**cfg, "file": str(output / WEIGHTS_FILE)}, indent=1))


def write_torchgeo(model, item: dict[str, Any], in_chans: int, cfg: dict[str, Any], staged: Path, output: Path) -> None:
    """A plain state dict (torch.load weights_only) as torchgeo's weight files are, and its meta and transform."""
    import torch

    torch.save(model.state_dict(), staged / TORCHGEO_WEIGHTS_FILE)
    (staged / TORCHGEO_META_FILE).write_text(
        json.dumps({"meta": torchgeo_meta(item, in_chans), "transforms": torchgeo_transforms(item, in_chans)}, indent=1)
    )


def write_hf(model, item: dict[str, Any], in_chans: int, cfg: dict[str, Any], staged: Path, output: Path) -> None:
    """timm's own hub layout (config.json, model.safetensors) and a model card from the STAC item."""
    from timm.models import save_for_hf

    from secoctl.report import rows

    save_for_hf(model, str(staged), model_config=hub_config_extra(item, in_chans), safe_serialization=True)
    # timm 1.0.31's save_for_hf names the stem (first_conv) whatever the cfg says; cleared as in pretrained_cfg.
    config = json.loads((staged / HF_CONFIG_FILE).read_text())
    config["pretrained_cfg"]["first_conv"] = None
    (staged / HF_CONFIG_FILE).write_text(json.dumps(config, indent=2))
    metric_rows = rows(item["properties"].get("secoctl:metrics") or {})
    (staged / "README.md").write_text(model_card(item, in_chans, metric_rows))


WRITERS = {"timm": write_timm, "torchgeo": write_torchgeo, "hf": write_hf}
