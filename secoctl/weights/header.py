"""The safetensors header check: a file's tensor names and shapes, read and verified without loading it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from secoctl.errors import UserError, shown

DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit
# A ResNet's state dict holds its batch norms' statistics beside the parameters; torch counts none of them.
BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


def parameter_count(shapes: dict[str, Any]) -> int:
    """The parameters a state dict's {name: shape} holds, as `sum(p.numel() for p in model.parameters())`
    counts them: the batch-norm buffers are not parameters."""
    return sum(math.prod(shape) for name, shape in shapes.items() if not name.endswith(BUFFER_SUFFIXES))


def safetensors_header(path: Path) -> dict[str, list[int]]:
    """{tensor name: shape} from a safetensors file's JSON header, checked against the file without loading it.

    Each tensor's bytes must be exactly its shape times its dtype's size, and the tensors must tile
    the data that follows the header with no gap, overlap or excess, as the format requires.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
            raise UserError(f"{path} is not a safetensors file (convert .pt/.ckpt files with `secoctl weights import`)")
        try:
            header = json.loads(handle.read(length))
        except (ValueError, RecursionError):
            raise UserError(f"{path} is not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise UserError(f"{path} is not a safetensors file: its header is not a JSON object")
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    data_bytes = size - 8 - length
    ranges = sorted((_tensor_range(path, name, entry, data_bytes), name) for name, entry in tensors.items())
    end = 0
    for (begin, stop), name in ranges:
        if begin != end:
            raise UserError(
                f"{path}: tensor {shown(name)} starts at byte {begin} of the data, not {end}: "
                "the tensors leave a gap or overlap"
            )
        end = stop
    if end != data_bytes:
        raise UserError(f"{path}: the header describes {end} bytes of tensor data, the file holds {data_bytes}")
    return {name: entry["shape"] for name, entry in tensors.items()}


def _tensor_range(path: Path, name: str, entry: Any, data_bytes: int) -> tuple[int, int]:
    """(begin, end) of one tensor's bytes, once its dtype, shape and offsets agree with each other and the file."""
    if not isinstance(entry, dict) or entry.get("dtype") not in DTYPE_BYTES:
        raise UserError(f"{path}: tensor {shown(name)} has no known dtype (one of {', '.join(DTYPE_BYTES)})")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise UserError(f"{path}: tensor {shown(name)} has shape {shown(shape)}, not a list of sizes")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_bytes
    ):
        raise UserError(
            f"{path}: tensor {shown(name)} has data_offsets {shown(offsets)}, "
            f"not [begin, end] within the file's {data_bytes} bytes of tensor data"
        )
    needed = math.prod(shape) * DTYPE_BYTES[entry["dtype"]]
    if needed != offsets[1] - offsets[0]:
        # an absurd shape's byte count can be too long to print
        needs = f"{needed} bytes" if needed <= data_bytes else f"more than the file's {data_bytes} bytes"
        raise UserError(
            f"{path}: tensor {shown(name)} of shape {shown(shape)} and dtype {entry['dtype']} "
            f"needs {needs}, its data_offsets hold {offsets[1] - offsets[0]}"
        )
    return offsets[0], offsets[1]
