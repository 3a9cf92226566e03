from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from tests.s3 import s3_bucket

BUCKET = "seco-weights"


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
