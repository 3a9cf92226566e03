"""The training-shards, pretrain and publish stages on S3 that answers 500/503, resets connections and
stalls while each writes: every stage completes, with the outputs of a clean run."""

from __future__ import annotations

import io
import json

import pytest
import torch

from secoctl.backends.local.executor import LocalExecutor
from tests.pretrain.made_data import collected_experiment
from tests.pretrain.test_pretrain_stage import SPEC as PRETRAIN_SPEC
from tests.s3 import s3_bucket
from tests.storage_faults import s3_behind_faults, write_faults

BUCKET = "seco-stage-faults"
SPEC = (
    PRETRAIN_SPEC.replace("NODES", "1")
    .replace("maxSteps: 12", "maxSteps: 4")
    .replace("checkpointEverySteps: 5", "checkpointEverySteps: 4")
    + '  publish: {name: tiny-rn18, version: "1"}\n'
)
# what each stage writes: training shards, checkpoints (multipart uploads), the weights file (multipart too)
FAULTS = [
    *write_faults(r"/datasets/shards-[0-9a-f]+/data/"),
    *write_faults(r"/pretrain/checkpoints/step-"),
    *write_faults(r"/weights/tiny-rn18/1/model\.safetensors"),
]


def outputs(fs, prefix: str) -> dict[str, bytes]:
    """Every object each stage committed, by its path under the run's prefix."""
    found = [
        *(path for path in fs.find(f"{prefix}/datasets") if "/datasets/shards-" in path and "/data/" in path),
        *fs.find(f"{prefix}/experiments/tiny/pretrain/checkpoints"),
        *fs.find(f"{prefix}/weights"),
    ]
    return {path.removeprefix(prefix): fs.cat_file(path) for path in found}


def timeless(checkpoint: bytes) -> dict:
    """A checkpoint without the one thing that differs between two clean runs: the throughput its metrics
    record (samples per second); tensors kept bit for bit, as bytes."""
    state = torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True)
    state["metrics"] = [
        {k: v for k, v in record.items() if k != "samples_per_s"} for record in json.loads(state["metrics"])
    ]

    def plain(value):
        if isinstance(value, torch.Tensor):
            return (value.dtype, tuple(value.shape), value.numpy().tobytes())
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(state)


@pytest.mark.slow
def test_shards_pretrain_and_publish_complete_under_faults_with_a_clean_runs_outputs(tmp_path_factory):
    import s3fs

    committed = {}
    for run in ("clean", "faulty"):  # a server each: SeaweedFS's test volumes hold one run's checkpoints
        with s3_bucket(tmp_path_factory.mktemp("weed"), BUCKET) as endpoint:
            experiment, _ = collected_experiment(f"s3://{BUCKET}/seco", SPEC)
            with s3_behind_faults(endpoint, FAULTS if run == "faulty" else []):
                LocalExecutor(f"s3://{BUCKET}/seco").apply(experiment)
            committed[run] = outputs(s3fs.S3FileSystem(skip_instance_cache=True), f"{BUCKET}/seco")
    clean, faulty = committed["clean"], committed["faulty"]
    assert clean.keys() == faulty.keys()
    kinds = {
        path.split("/")[2].split("-")[0]
        if path.startswith("/datasets/")
        else path.split("/")[3]
        if path.startswith("/experiments/")
        else "weights"
        for path in clean
    }
    assert kinds >= {"shards", "pretrain", "weights"}, sorted(clean)  # collect's too, when it shares the storage
    for path in clean:
        if path.endswith(".pt"):
            assert timeless(clean[path]) == timeless(faulty[path]), path
        elif not path.endswith(("item.json", "SHA256SUMS")):  # the STAC item names its storage and time
            assert clean[path] == faulty[path], path
    sums = {
        run: next(
            line
            for line in files["/weights/tiny-rn18/1/SHA256SUMS"].decode().splitlines()
            if line.endswith("model.safetensors")
        )
        for run, files in (("clean", clean), ("faulty", faulty))
    }
    assert sums["clean"] == sums["faulty"]
