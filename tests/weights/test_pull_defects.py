"""`weights pull` and `logs` on damaged or changed input: one line with the right advice, no traceback, and
no partial download left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from secoctl import store, weights
from secoctl.errors import UserError
from secoctl.tree import experiment_uri
from secoctl.weights import published
from tests.conftest import run_cli
from tests.weights.conftest import backbone_state
from tests.weights.test_weights import cli


def partial_folder(storage: str) -> Path:
    return published._cache_dir(storage, weights.WeightsRef("w", "1")).parent / ".1.partial"


@pytest.mark.parametrize(
    "sums", [b"\xff\xfe\x00garbage\n", b"not sums at all\n", b"\n\n"], ids=["utf8", "garbage", "empty"]
)
def test_a_damaged_sums_file_is_one_line_asking_for_a_new_publish(sums: bytes, safetensors_file: Path, tmp_path: Path):
    storage = (tmp_path / "store").as_uri()
    weights.push(storage, safetensors_file, "w", "1")
    store.write_bytes(store.join(weights.version_uri(storage, "w", "1"), "SHA256SUMS"), sums)
    result = cli("pull", "w:1", storage=storage)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: w:1: SHA256SUMS is not a list of '<sha256>  <file>' lines; the version cannot be verified: "
        "ask the publisher to publish it again"
    ]


def test_a_pull_interrupted_before_a_forced_republish_fetches_the_new_files(safetensors_file: Path, tmp_path: Path):
    storage = (tmp_path / "store").as_uri()
    weights.push(storage, safetensors_file, "w", "1")
    weights.pull(storage, "w:1")
    cached = published._cache_dir(storage, weights.WeightsRef("w", "1"))
    partial = partial_folder(storage)
    cached.rename(partial)  # as a pull killed after its downloads, before its commit, leaves it
    (partial / "model.safetensors").write_bytes(safetensors_file.read_bytes()[: safetensors_file.stat().st_size // 2])
    replacement = tmp_path / "other.safetensors"
    save_file(backbone_state(seed=1), str(replacement))
    weights.push(storage, replacement, "w", "1", force=True)
    _, folder = weights.pull(storage, "w:1")
    assert (folder / "model.safetensors").read_bytes() == replacement.read_bytes()


def test_a_checksum_mismatch_leaves_no_partial_download(safetensors_file: Path, tmp_path: Path):
    storage = (tmp_path / "store").as_uri()
    weights.push(storage, safetensors_file, "w", "1")
    target = store.join(weights.version_uri(storage, "w", "1"), "model.safetensors")
    payload = bytearray(store.read_bytes(target))
    payload[-1] ^= 0xFF
    store.write_bytes(target, bytes(payload))
    with pytest.raises(UserError, match="Nothing was cached"):
        weights.pull(storage, "w:1")
    assert not partial_folder(storage).exists()


@pytest.mark.parametrize("size", [10**30, 0, 2**31])
def test_an_item_claiming_an_absurd_input_size_is_refused(size: int, safetensors_file: Path, tmp_path: Path):
    storage = (tmp_path / "store").as_uri()
    weights.push(storage, safetensors_file, "w", "1")
    item_uri = store.join(weights.version_uri(storage, "w", "1"), "item.json")
    item = json.loads(store.read_text(item_uri))
    item["properties"]["secoctl:input"]["size"] = size
    with pytest.raises(UserError, match="is not a secoctl model item"):
        weights.parse_item(json.dumps(item), "w:1: item.json")
    with pytest.raises(UserError, match="--input-size"):
        weights.push(storage, safetensors_file, "w", "2", input_size=size)


def test_logs_of_a_stage_path_that_is_a_file_says_there_are_none(storage: Path, tmp_path: Path):
    spec_file = tmp_path / "demo.yaml"
    spec_file.write_text("apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: demo}\n")
    from secoctl.spec.file import load_files
    from secoctl.stored import prepare_storage

    experiment = load_files([spec_file])[0].with_storage(storage.as_uri())
    prepare_storage(experiment_uri(storage.as_uri(), "demo"), experiment)
    (storage / "experiments" / "demo" / "pretrain").write_text("not a folder")
    result = run_cli("logs", "demo", "--local", storage=storage)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr == "error: demo has no logs yet; `secoctl apply` writes them as stages run\n"
