"""`secoctl weights` against file:// and a real S3 server: publish, list, pull, verify, load."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import torchvision

from secoctl import store, weights
from secoctl.errors import UserError
from secoctl.weights import published, seco_releases
from tests.conftest import run_cli
from tests.weights.conftest import backbone_state, made_release


def cli(*args: str, storage: str) -> "subprocess.CompletedProcess":  # noqa: F821
    return run_cli("weights", *args, "--storage", storage, timeout=300)


def test_push_list_pull_load_round_trip_on_s3(safetensors_file: Path, s3_storage: str, tmp_path: Path):
    pushed = cli("push", str(safetensors_file), "--name", "seco-rn18", "--version", "1", storage=s3_storage)
    assert pushed.returncode == 0, pushed.stderr
    cli("push", str(safetensors_file), "--name", "seco-rn18", "--version", "2", storage=s3_storage)
    listed = cli("list", storage=s3_storage)
    assert "seco-rn18" in listed.stdout and "1, 2" in listed.stdout
    shown = json.loads(cli("show", "seco-rn18:1", storage=s3_storage).stdout)
    assert shown["properties"]["mlm:architecture"] == "ResNet"
    assert [b["name"] for b in shown["properties"]["mlm:input"][0]["bands"]] == ["B04", "B03", "B02"]
    pulled = cli("pull", "seco-rn18", "-o", str(tmp_path / "out"), storage=s3_storage)
    assert pulled.returncode == 0 and "seco-rn18:2: verified" in pulled.stdout
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == safetensors_file.read_bytes()

    model, transform = weights.load("seco-rn18:1", storage=s3_storage)
    reference = torchvision.models.resnet18()
    reference.fc = torch.nn.Identity()
    reference.load_state_dict(backbone_state())
    batch = transform(torch.randint(0, 5000, (2, 3, 64, 64)))
    assert batch.shape == (2, 3, 224, 224)
    torch.testing.assert_close(model(batch), reference.eval()(batch))


def test_a_version_is_immutable_unless_forced(safetensors_file: Path, tmp_path: Path):
    storage = (tmp_path / "store").as_uri()
    assert cli("push", str(safetensors_file), "--name", "w", "--version", "1", storage=storage).returncode == 0
    again = cli("push", str(safetensors_file), "--name", "w", "--version", "1", storage=storage)
    assert again.returncode == 2 and "immutable" in again.stderr and "Traceback" not in again.stderr
    assert (
        cli("push", str(safetensors_file), "--name", "w", "--version", "1", "--force", storage=storage).returncode == 0
    )


@pytest.mark.parametrize(
    "ref, message",
    [("../../etc:1", "invalid"), ("w:../1", "invalid"), ("missing", "no published"), ("w:9", "no version '9'")],
)
def test_bad_names_and_versions_fail_with_one_line(ref: str, message: str, safetensors_file: Path, tmp_path: Path):
    storage = (tmp_path / "store").as_uri()
    cli("push", str(safetensors_file), "--name", "w", "--version", "1", storage=storage)
    result = cli("pull", ref, storage=storage)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_tampered_file_fails_and_leaves_nothing_cached(safetensors_file: Path, s3_storage: str):
    weights.push(s3_storage, safetensors_file, "w", "1")
    target = store.join(weights.version_uri(s3_storage, "w", "1"), "model.safetensors")
    payload = bytearray(store.read_bytes(target))
    payload[len(payload) // 2] ^= 0xFF
    store.write_bytes(target, bytes(payload))
    with pytest.raises(UserError, match="checksum mismatch for model.safetensors"):
        weights.pull(s3_storage, "w:1")
    assert not any(p.is_file() and not p.name.endswith(".json") for p in weights.weights_cache().rglob("*.safetensors"))


def test_an_interrupted_pull_resumes_from_its_bytes(safetensors_file: Path, tmp_path: Path):
    storage = (tmp_path / "store").as_uri()
    weights.push(storage, safetensors_file, "w", "1")
    ref = weights.WeightsRef("w", "1")
    partial = published._cache_dir(storage, ref).parent / ".1.partial"
    partial.mkdir(parents=True)
    full = safetensors_file.read_bytes()
    (partial / "model.safetensors").write_bytes(full[: len(full) // 3])  # what a killed pull left
    fetched: list[int] = []
    _, folder = weights.pull(storage, "w:1", on_bytes=fetched.append)
    assert (folder / "model.safetensors").read_bytes() == full
    assert sum(fetched) < len(full)  # only the missing two thirds (plus item.json) came over the wire


def test_a_large_upload_goes_in_parts_and_an_interrupted_one_never_shows(s3_storage: str, tmp_path: Path, monkeypatch):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * store.MULTIPART_CHUNK + 1234))
    uri = store.join(s3_storage, "big.bin")
    store.upload_file(big, uri)
    assert store.read_bytes(uri) == big.read_bytes()

    import s3fs

    calls = {"parts": 0}
    original = s3fs.S3FileSystem._call_s3

    async def failing_after_a_part(self, method, *args, **kwargs):
        if method == "upload_part":
            calls["parts"] += 1
            if calls["parts"] == 2:
                raise ConnectionResetError("connection cut mid-upload")
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", failing_after_a_part)
    with pytest.raises(Exception):
        store.upload_file(big, store.join(s3_storage, "interrupted.bin"))
    monkeypatch.undo()
    assert calls["parts"] >= 2
    assert not store.exists(store.join(s3_storage, "interrupted.bin"))


def test_import_converts_reference_and_torchgeo_checkpoints(tmp_path: Path):
    storage = (tmp_path / "store").as_uri()
    state = backbone_state("resnet18", seed=3)
    ckpt = made_release(tmp_path, state)
    torchgeo = {**state, "fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}
    torch.save(torchgeo, tmp_path / "resnet18_sentinel2_rgb_seco.pth")
    # The made file stands in for the release by its own md5, injected in place of the shipped table.
    releases = {seco_releases.md5_of(ckpt): seco_releases.Release("seco_resnet18_1m", "resnet18", "seco-1m")}
    weights.import_checkpoint(storage, ckpt, "seco-ckpt", "seco-rn18", "1", releases=releases)
    provenance = weights.show(storage, "seco-rn18:1")["properties"]["secoctl:provenance"]
    assert provenance["release"] == "seco_resnet18_1m" and provenance["pretraining"] == "seco-1m"
    result = run_cli(
        "weights",
        "import",
        str(tmp_path / "resnet18_sentinel2_rgb_seco.pth"),
        "--format",
        "torchgeo",
        "--name",
        "seco-rn18",
        "--version",
        "2",
        "--storage",
        storage,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for version in ("1", "2"):
        model, _ = weights.load(f"seco-rn18:{version}", storage=storage)
        for key, value in state.items():
            torch.testing.assert_close(model.state_dict()[key], value)


def test_the_release_table_is_the_reference_readme_s():
    assert {md5: r.name for md5, r in seco_releases.RELEASES.items()} == {
        "dcf336be31f6c6b0e77dcb6cc958fca8": "seco_resnet18_100k",
        "53d5c41d0f479bdfd31d6746ad4126db": "seco_resnet18_1m",
        "9672c303f6334ef816494c13b9d05753": "seco_resnet50_100k",
        "7b09c54aed33c0c988b425c54f4ef948": "seco_resnet50_1m",
    }
    assert all(
        r.name == f"seco_{r.backbone}_{r.pretraining.removeprefix('seco-')}" for r in seco_releases.RELEASES.values()
    )


def test_import_refuses_a_checkpoint_that_is_no_release_in_one_line(tmp_path: Path):
    ckpt = made_release(tmp_path, backbone_state("resnet18", seed=3), "seco_resnet50_1m.ckpt")
    result = run_cli(
        "weights",
        "import",
        str(ckpt),
        "--format",
        "seco-ckpt",
        "--name",
        "x",
        "--version",
        "1",
        "--storage",
        (tmp_path / "s").as_uri(),
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"md5 {seco_releases.md5_of(ckpt)}) is not a SeCo release checkpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "s" / "weights").exists()


def test_import_refuses_a_release_sum_over_another_architecture(tmp_path: Path):
    ckpt = made_release(tmp_path, backbone_state("resnet18", seed=3))
    releases = {seco_releases.md5_of(ckpt): seco_releases.Release("seco_resnet50_1m", "resnet50", "seco-1m")}
    with pytest.raises(UserError, match="has the md5 of seco_resnet50_1m but holds a resnet18"):
        weights.import_checkpoint((tmp_path / "s").as_uri(), ckpt, "seco-ckpt", "x", "1", releases=releases)


class Payload:
    """Anything beyond tensors and plain containers needs unpickling code to load."""


def test_import_refuses_pickled_code(tmp_path: Path):
    torch.save({"conv1.weight": torch.zeros(1), "evil": Payload()}, tmp_path / "evil.pth")
    result = run_cli(
        "weights",
        "import",
        str(tmp_path / "evil.pth"),
        "--format",
        "torchgeo",
        "--name",
        "x",
        "--version",
        "1",
        "--storage",
        (tmp_path / "s").as_uri(),
        timeout=300,
    )
    assert result.returncode == 2 and "weights_only" in result.stderr and "Traceback" not in result.stderr


def test_concurrent_pulls_of_one_version_both_succeed(safetensors_file: Path, s3_storage: str):
    """Evaluate parts load the same weights at once: neither may see the other's half-written bytes."""
    weights.push(s3_storage, safetensors_file, "w", "1")

    def slow_pull(_: int) -> Path:
        return weights.pull(s3_storage, "w:1", on_bytes=lambda n: time.sleep(0.05))[1]  # long enough to overlap

    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(slow_pull, range(2)))
    assert folders[0] == folders[1]
    assert (folders[0] / "model.safetensors").read_bytes() == safetensors_file.read_bytes()
    assert weights.verify(folders[0], weights.parse_sums((folders[0] / "SHA256SUMS").read_text())) == []


def test_a_version_whose_sums_lack_the_model_is_refused(safetensors_file: Path, tmp_path: Path):
    storage = (tmp_path / "store").as_uri()
    weights.push(storage, safetensors_file, "w", "1")
    sums_uri = store.join(weights.version_uri(storage, "w", "1"), "SHA256SUMS")
    only_item = [line for line in store.read_text(sums_uri).splitlines() if line.endswith("item.json")]
    store.write_text(sums_uri, "\n".join(only_item) + "\n")
    result = cli("pull", "w:1", storage=storage)
    assert result.returncode == 2 and "verified" not in result.stdout
    assert result.stderr.strip().splitlines() == [
        "error: w:1: SHA256SUMS does not list model.safetensors; the version is incomplete and cannot be verified"
    ]


def safetensors_bytes(header: object, data: bytes = b"", declared_length: int | None = None) -> bytes:
    encoded = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return (declared_length or len(encoded)).to_bytes(8, "little") + encoded + data


def real_header(path: Path) -> dict:
    raw = path.read_bytes()
    return json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])


F32_PAIR = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda real: safetensors_bytes(real_header(real)), "within the file's 0 bytes"),  # a header without its data
        (
            lambda real: safetensors_bytes(
                {"a": {"dtype": "F32", "shape": [10**12, 10**12], "data_offsets": [0, 8]}}, bytes(8)
            ),
            "needs more than the file's 8 bytes",
        ),
        (lambda real: safetensors_bytes(F32_PAIR, bytes(12)), "describes 8 bytes of tensor data, the file holds 12"),
        (
            lambda real: safetensors_bytes({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
            "no known dtype",
        ),
        (
            lambda real: safetensors_bytes({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8)),
            "not a list of sizes",
        ),
        (
            lambda real: safetensors_bytes({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}, bytes(8)),
            "needs 4 bytes, its data_offsets hold 8",
        ),
        (
            lambda real: safetensors_bytes(
                {**F32_PAIR, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)
            ),
            "gap or overlap",
        ),
        (
            lambda real: safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 2**70]}}, bytes(8)),
            "not [begin, end] within the file's 8 bytes",
        ),
        (lambda real: safetensors_bytes(F32_PAIR, bytes(8), declared_length=2**40), "not a safetensors file"),
        (lambda real: safetensors_bytes(b"{not json", bytes(8)), "header is not JSON"),
        (lambda real: safetensors_bytes(b"[" * 200_000, bytes(8)), "header is not JSON"),
        (lambda real: safetensors_bytes([1, 2], bytes(8)), "not a JSON object"),
    ],
    ids=[
        "no-data",
        "absurd-shape",
        "excess",
        "dtype",
        "negative-dim",
        "size",
        "overlap",
        "offsets",
        "length",
        "json",
        "nesting",
        "not-object",
    ],
)
def test_push_refuses_a_malformed_safetensors_file_in_one_line(
    content, message, safetensors_file: Path, tmp_path: Path
):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content(safetensors_file))
    storage = tmp_path / "store"
    result = cli("push", str(bad), "--name", "w", "--version", "1", storage=storage.as_uri())
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr and len(result.stderr) < 400
    assert not storage.exists()


@pytest.mark.parametrize(
    "item",
    [b"{not json", b"\xff\xfe", json.dumps({"properties": {}}).encode(), json.dumps([1]).encode()],
    ids=["json", "utf8", "fields", "not-object"],
)
def test_a_bad_item_json_is_a_one_line_error(item: bytes, safetensors_file: Path, tmp_path: Path):
    storage = (tmp_path / "store").as_uri()
    bad_item = tmp_path / "item.json"
    bad_item.write_bytes(item)
    weights.publish(storage, "w", "1", {"model.safetensors": safetensors_file, "item.json": bad_item})
    for command in ("show", "pull"):
        result = cli(command, "w:1", storage=storage)
        assert result.returncode == 2 and "verified" not in result.stdout, result.stderr
        assert result.stderr.strip().splitlines() == [
            "error: w:1: item.json is not a secoctl model item (STAC JSON whose properties hold secoctl:backbone and "
            "secoctl:input: known, distinct bands, each with its stretch, mean and std); ask the publisher to publish "
            "the version again"
        ]


@pytest.mark.parametrize(
    "environment, message",
    [
        ({"AWS_SECRET_ACCESS_KEY": "wrong"}, "access denied"),
        ({"AWS_ACCESS_KEY_ID": "nobody"}, "access denied"),
        (
            {
                "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
                "AWS_MAX_ATTEMPTS": "1",
            },
            "Could not connect to the endpoint URL",
        ),  # one attempt: botocore's retries take 10 s
    ],
    ids=["secret", "key", "endpoint-down"],
)
def test_storage_failures_are_one_line_errors(
    environment, message, safetensors_file: Path, s3_storage: str, monkeypatch
):
    weights.push(s3_storage, safetensors_file, "w", "1")
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    for command in (
        ("weights", "pull", "w:1"),
        ("weights", "list"),
        ("weights", "push", str(safetensors_file), "--name", "w", "--version", "2"),
        ("status",),
        ("delete", "some-experiment"),
    ):
        result = run_cli(*command, "--storage", s3_storage, timeout=300)
        assert result.returncode == 2, (command, result.stderr[-2000:])
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert result.stderr.startswith(f"error: storage {s3_storage}: ") and message in result.stderr


@pytest.mark.parametrize(
    "storage, message",
    [
        ("gs://bucket/tree", "gs:// is not supported"),
        ("s3://bucket/../tree", "climbs out of its folder with '..'"),
        ("nosuch://x/y", "nosuch"),
    ],
)
def test_an_unusable_storage_uri_is_a_one_line_error(storage: str, message: str):
    for command in (("weights", "pull", "w:1"), ("weights", "list"), ("status",)):
        result = run_cli(*command, "--storage", storage)
        assert result.returncode == 2 and message in result.stderr, (command, result.stderr[-2000:])
        assert len(result.stderr.strip().splitlines()) == 1
