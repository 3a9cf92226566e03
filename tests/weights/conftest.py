from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from secoctl.weights.backbone_keys import ENCODER_INDEX
from tests.s3 import s3_bucket

BUCKET = "seco-weights"
INDEX_OF = {name: index for index, name in ENCODER_INDEX.items()}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3 server (SeaweedFS) on 127.0.0.1 with one bucket, for the whole session."""
    with s3_bucket(tmp_path_factory.mktemp("weed"), BUCKET) as endpoint:
        yield endpoint


@pytest.fixture
def s3_storage(s3_endpoint, request) -> str:
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').replace(']', '')}"


def backbone_state(name: str = "resnet18", seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


@pytest.fixture
def safetensors_file(tmp_path: Path) -> Path:
    path = tmp_path / "backbone.safetensors"
    save_file(backbone_state(), str(path))
    return path


def made_release(tmp_path: Path, state: dict, file: str = "seco_resnet18_1m.ckpt") -> Path:
    """A Lightning checkpoint shaped as the reference's releases are (not one of them: its md5 differs)."""
    lightning = {
        "state_dict": {f"encoder_q.{INDEX_OF[k.split('.')[0]]}.{k.split('.', 1)[1]}": v for k, v in state.items()}
        | {"queue0": torch.randn(128, 8), "encoder_k.0.weight": torch.randn(64, 3, 7, 7)},
        "hyper_parameters": argparse.Namespace(arch="resnet18", base_lr=0.03),
        "epoch": 199,
    }
    torch.save(lightning, tmp_path / file)
    return tmp_path / file
