"""The torch side of published weights: the backbone builder the jobs share, `load` and `import_checkpoint`.

`secoctl.weights` imports this module only inside `load`, `input_transform` and `import_checkpoint`,
and this module imports torch only inside its functions, so no control-plane import pulls torch in.
"""

from __future__ import annotations

import argparse
import functools
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secoctl import store
from secoctl.errors import UserError, shown
from secoctl.weights.header import parameter_count
from secoctl.weights.published import (
    IMPORT_FORMATS,
    ITEM_FILE,
    WEIGHTS_FILE,
    check_name,
    check_version,
    parse_item,
    publish_backbone,
    pull,
)

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)


def resnet(name: str, in_chans: int = 3) -> nn.Module:
    """torchvision's ResNet, its stem made for `in_chans` bands when they are not its 3: random init as
    torchvision initialises every convolution (ImageNet weights have 3 channels, so there is nothing to
    copy; SSL4EO-S12's MoCo builder replaces conv1 the same way for its 12 and 13 bands). With 3 bands
    nothing is replaced, so an RGB model draws the same random numbers as before."""
    import torchvision
    from torch import nn

    model = getattr(torchvision.models, name)(weights=None)
    if in_chans != 3:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def build_backbone(name: str, weights: Path | None = None, in_chans: int = 3) -> nn.Module:
    """torchvision ResNet with fc = Identity (pooled features) over `in_chans` bands; weights loaded strictly
    when given."""
    from safetensors.torch import load_file
    from torch import nn

    model = resnet(name, in_chans)
    model.fc = nn.Identity()
    if weights is not None:
        model.load_state_dict(load_file(str(weights)), strict=True)
    return model.eval()


@functools.cache
def reflectance_input_class() -> type:
    """The transform's nn.Module class, made on first use so that importing this module needs no torch."""
    import torch
    from torch import nn

    class ReflectanceInput(nn.Module):
        """Reflectance × 10000 → each band's stretch to [0, 1] → the weights' normalisation → size
        (size None keeps the input's, as dense tasks need)."""

        def __init__(
            self,
            stretch: list[list[float]],
            mean: list[float],
            std: list[float],
            size: int | None,
            resize: str = "bilinear",
        ):
            super().__init__()
            self.resize = resize
            self.register_buffer("low", torch.tensor([s[0] for s in stretch]).view(-1, 1, 1))
            self.register_buffer("high", torch.tensor([s[1] for s in stretch]).view(-1, 1, 1))
            self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
            self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))
            self.size = size

        def forward(self, reflectance: torch.Tensor) -> torch.Tensor:
            """`reflectance`: a tensor or anything torch.as_tensor takes (a numpy array of any integer or float
            dtype, nested lists); computed in float32 on the transform's device, as the model takes it."""
            reflectance = torch.as_tensor(reflectance, device=self.low.device).float()
            # The reference quantised the stretched value to uint8 before normalising; so do we.
            unit = ((reflectance - self.low) / (self.high - self.low)).clamp(0, 1)
            unit = torch.round(unit * 255) / 255
            batched = unit if unit.dim() == 4 else unit.unsqueeze(0)
            if self.size is not None and batched.shape[-2:] != (self.size, self.size):
                batched = nn.functional.interpolate(
                    batched,
                    size=(self.size, self.size),
                    mode=self.resize,
                    align_corners=False,
                    antialias=self.resize == "bilinear",
                )
                batched = batched.clamp(0, 1)  # bicubic overshoots; PIL's clips to the 8-bit range
            normalised = (batched - self.mean) / self.std
            return normalised if unit.dim() == 4 else normalised[0]

    return ReflectanceInput


def input_transform(item: dict[str, Any]):
    """The callable that turns (…, C, H, W) reflectance × 10000, in the item's bands order (B04, B03, B02 for
    the paper's RGB), into the model's input."""
    spec = item["properties"]["secoctl:input"]
    return reflectance_input_class()(
        [spec["stretch"][b] for b in spec["bands"]], spec["mean"], spec["std"], spec["size"]
    )


def adapted_state(state: dict[str, Any], found: list) -> dict[str, Any]:
    """`state` with conv1's input columns chosen by `found` (bands.Source): a trained band's column, or zeros."""
    import torch

    stem = state["conv1.weight"]
    columns = [stem[:, s.column] if s.column is not None else torch.zeros_like(stem[:, 0]) for s in found]
    return {**state, "conv1.weight": torch.stack(columns, dim=1).contiguous()}


def adapted(item: dict[str, Any], weights_file: Path, wanted: list[str] | tuple[str, ...], where: str):
    """(state dict, item) of the weights in `weights_file` adapted to the `wanted` bands, the mapping logged."""
    from safetensors.torch import load_file

    from secoctl.weights import bands

    found = bands.sources(item["properties"]["secoctl:input"]["bands"], wanted)
    logger.info("%s over %s: %s", where, ", ".join(s.band for s in found), "; ".join(s.describe() for s in found))
    state = adapted_state(load_file(str(weights_file)), found)
    return state, bands.adapted_item(item, found, parameter_count({k: t.shape for k, t in state.items()}))


def load(text: str, storage: str | None = None, bands: list[str] | tuple[str, ...] | None = None):
    """(torchvision ResNet backbone with the published weights, its input transform); over `bands`, in their
    order, when given (see `secoctl.weights.bands`)."""
    storage = store.storage(storage)
    ref, folder = pull(storage, text)
    item = parse_item((folder / ITEM_FILE).read_text(errors="replace"), f"{ref}: {ITEM_FILE}")
    backbone = item["properties"]["secoctl:backbone"]
    if bands is None:
        model = build_backbone(backbone, folder / WEIGHTS_FILE, len(item["properties"]["secoctl:input"]["bands"]))
        return model, input_transform(item)
    state, item = adapted(item, folder / WEIGHTS_FILE, bands, str(ref))
    model = build_backbone(backbone, in_chans=len(bands))
    model.load_state_dict(state, strict=True)
    return model, input_transform(item)


def import_checkpoint(
    storage: str,
    path: Path,
    fmt: str,
    name: str,
    version: str,
    input_size: int = 224,
    force: bool = False,
    releases: dict[str, Any] | None = None,
    bands: tuple[str, ...] | None = None,
) -> str:
    """Convert the reference's Lightning checkpoints or torchgeo's SeCo weights, without unpickling code; over
    `bands` (the paper's RGB when None), as many as the stem's input channels.

    A seco-ckpt file must be one of the reference's releases by its MD5 sum (`releases` replaces that
    table only in tests); the release's name and pre-training set go into the published provenance.
    """
    import torch
    from safetensors.torch import save_file

    from secoctl.weights.backbone_keys import architecture, from_encoder_q, from_torchvision_like

    check_name(name)
    check_version(version)
    if fmt not in IMPORT_FORMATS:
        raise UserError(f"--format {shown(fmt)} is not one of {', '.join(IMPORT_FORMATS)}")
    provenance: dict[str, Any] = {"imported_from": path.name, "format": fmt}
    release = None
    if fmt == "seco-ckpt":
        from secoctl.weights import seco_releases

        release, md5 = seco_releases.identify(path, seco_releases.RELEASES if releases is None else releases)
        provenance.update({"release": release.name, "md5": md5, "pretraining": release.pretraining})
    try:
        # Lightning stores its hyper-parameters as an argparse.Namespace: a plain attribute bag.
        with torch.serialization.safe_globals([argparse.Namespace]):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means the file is not safely loadable
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} cannot be loaded as plain tensors (torch.load weights_only=True): {first}") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else {}
    renamed = from_encoder_q(state) if fmt == "seco-ckpt" else from_torchvision_like(state)
    if not renamed:
        expected = (
            "encoder_q.<i>.* keys (SeCo Lightning checkpoint)"
            if fmt == "seco-ckpt"
            else "conv1/bn1/layer1-4 keys (torchgeo/timm ResNet)"
        )
        raise UserError(f"{path} has no {expected}; is --format right?")
    tensors = {new: state[old].contiguous() for new, old in renamed.items()}
    try:
        backbone = architecture(tensors)
        in_chans = tensors["conv1.weight"].shape[1] if "conv1.weight" in tensors else 3
        build_backbone(backbone, in_chans=in_chans).load_state_dict(tensors, strict=True)
    except (ValueError, RuntimeError) as error:
        raise UserError(f"{path}: {str(error).splitlines()[0]}") from None
    if release is not None and release.backbone != backbone:
        raise UserError(f"{path.name} has the md5 of {release.name} but holds a {backbone}")
    with tempfile.TemporaryDirectory(prefix="secoctl-import-") as scratch:
        converted = Path(scratch, WEIGHTS_FILE)
        save_file(tensors, str(converted))
        return publish_backbone(
            storage,
            converted,
            name,
            version,
            backbone,
            input_size,
            parameter_count({k: t.shape for k, t in tensors.items()}),
            provenance,
            force=force,
            bands=bands,
        )
