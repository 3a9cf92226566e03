"""Published weights, split by job: the store (`published`), the safetensors header check (`header`)
and the torch side (`backbone`). Every name is importable from here; importing this package leaves
torch unloaded: the torch side is imported only when `load`, `input_transform`, `import_checkpoint` or
`export` runs.

    from secoctl.weights import load
    model, transform = load("seco-resnet18-quickstart:1")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from secoctl.weights.header import DTYPE_BYTES, MAX_HEADER_BYTES, parameter_count, safetensors_header
from secoctl.weights.published import (
    EXPORT_FORMATS,
    IMPORT_FORMATS,
    ITEM_FILE,
    MAX_INPUT_SIZE,
    NAME,
    READ_CHUNK,
    SUMS_FILE,
    SUMS_LINE,
    VERSION,
    WEIGHTS_FILE,
    WeightsRef,
    check_name,
    check_version,
    input_bands,
    names,
    parse_bands,
    parse_item,
    parse_sums,
    publish,
    publish_backbone,
    pull,
    push,
    resolve,
    sha256_file,
    show,
    verify,
    version_uri,
    versions,
    weights_cache,
)

__all__ = [
    "DTYPE_BYTES",
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "ITEM_FILE",
    "MAX_HEADER_BYTES",
    "MAX_INPUT_SIZE",
    "NAME",
    "READ_CHUNK",
    "SUMS_FILE",
    "SUMS_LINE",
    "VERSION",
    "WEIGHTS_FILE",
    "WeightsRef",
    "weights_cache",
    "check_name",
    "check_version",
    "export",
    "import_checkpoint",
    "input_bands",
    "input_transform",
    "load",
    "names",
    "parameter_count",
    "parse_bands",
    "parse_item",
    "parse_sums",
    "publish",
    "publish_backbone",
    "pull",
    "push",
    "resolve",
    "safetensors_header",
    "sha256_file",
    "show",
    "verify",
    "version_uri",
    "versions",
]


def load(text: str, storage: str | None = None, bands: list[str] | tuple[str, ...] | None = None):
    """(torchvision ResNet backbone with the published weights, its input transform); with `bands`, both over
    those bands in that order: each stem column taken by band name or alias, nearest wavelength, or new (zero),
    the normalisation by name (see `secoctl.weights.bands`)."""
    from secoctl.weights import backbone

    return backbone.load(text, storage, bands)


def input_transform(item: dict[str, Any]):
    """The callable that turns (…, C, H, W) reflectance × 10000, in the item's bands order (B04, B03, B02 for the
    paper's RGB), into the model's input."""
    from secoctl.weights import backbone

    return backbone.input_transform(item)


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
    """Convert a reference or torchgeo checkpoint to safetensors and publish it (see `backbone.import_checkpoint`)."""
    from secoctl.weights import backbone

    return backbone.import_checkpoint(storage, path, fmt, name, version, input_size, force, releases, bands)


def export(storage: str, text: str, fmt: str, output: Path, bands: list[str] | tuple[str, ...] | None = None) -> str:
    """Write published weights as timm, torchgeo or a Hugging Face Hub folder load them, over `bands` when given
    (see `exporting.export`)."""
    from secoctl.weights import exporting

    return exporting.export(storage, text, fmt, output, bands)
