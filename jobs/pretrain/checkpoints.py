"""Checkpoints in the storage tree: written whole, found newest-first, loaded without unpickling code."""

from __future__ import annotations

import io
from typing import Any

import torch

from secoctl import store

# Checkpoints kept after each save: the newest, and the one before it for `latest` to fall back on should the
# newest not load. A ResNet-50 run's checkpoint (both encoders, the optimizer, the queue) is about 150 MB.
KEEP = 2


def name(step: int) -> str:
    return f"step-{step:09d}.pt"


def save(directory: str, step: int, state: dict[str, Any]) -> str:
    """Write step `step`'s checkpoint whole, then remove all but the newest KEEP."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    uri = store.join(directory, name(step))
    store.write_bytes(uri, buffer.getvalue())
    for old in list_steps(directory)[:-KEEP]:
        store.remove(store.join(directory, name(old)))
    return uri


def list_steps(directory: str) -> list[int]:
    return sorted(int(n[5:14]) for n in store.list_names(directory) if n.startswith("step-") and n.endswith(".pt"))


def load(uri: str) -> dict[str, Any]:
    fs, path = store.filesystem(uri)
    with fs.open(path, "rb") as handle:
        return torch.load(io.BytesIO(handle.read()), map_location="cpu", weights_only=True)


def latest(directory: str) -> dict[str, Any] | None:
    """The newest checkpoint that loads; a damaged one is passed over for the one before it."""
    for step in reversed(list_steps(directory)):
        try:
            return load(store.join(directory, name(step)))
        except Exception:  # noqa: BLE001 - torn bytes fail in torch's unpickler as any of several errors
            continue
    return None


def final_backbone(directory: str, backbone: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The newest checkpoint's query encoder in torchvision's key names (checked by a strict load into a
    backbone over as many bands as its stem reads), and the checkpoint itself: what evaluate measures and
    publish ships."""
    from jobs.common.backbone import build_backbone
    from secoctl.weights.backbone_keys import from_encoder_q

    checkpoint = latest(directory)
    if checkpoint is None:
        raise RuntimeError(f"no readable pretrain checkpoint under {directory}")
    state = checkpoint["model"]
    tensors = {name: state[key].detach().cpu().contiguous() for name, key in from_encoder_q(state).items()}
    build_backbone(backbone, in_chans=tensors["conv1.weight"].shape[1]).load_state_dict(tensors, strict=True)
    return tensors, checkpoint
