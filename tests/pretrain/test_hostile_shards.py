"""A damaged or hostile training shard fails in one line naming its file, and costs no memory to refuse.

The corpus: files that are not tars, indexes that are not what encode() writes (wrong JSON types, nesting past
the recursion limit, numbers past any offset, shapes that do not match the members they point at), and an index
as large as the header may claim. Each must raise ValueError, never another error, in one line naming the file.
"""

from __future__ import annotations

import io
import json
import tarfile
import tracemalloc

import pytest

from jobs.common.failures import Where, classify
from jobs.common.training_shards import BLOCK, INDEX_MEMBER, MAX_INDEX_BYTES, TrainingShard, encode
from jobs.pretrain.loader import SeasonalBatches, ShardRef
from jobs.pretrain.shard_cache import ShardCache
from tests.pretrain.test_training_shards import made_locations

GOOD = encode(made_locations(3, timestamps=2, size=4))


def with_index(index: bytes, shard: bytes = GOOD) -> bytes:
    """`shard` with its index member replaced by `index`; the members after it keep their relative offsets."""
    old = tarfile.TarInfo.frombuf(shard[:BLOCK], tarfile.ENCODING, "surrogateescape")
    rest = shard[BLOCK + -(-old.size // BLOCK) * BLOCK :]
    header = tarfile.TarInfo(INDEX_MEMBER)
    header.size = len(index)
    return header.tobuf(tarfile.USTAR_FORMAT) + index + b"\0" * (-len(index) % BLOCK) + rest


def good_index() -> dict:
    return json.loads(tarfile.open(fileobj=io.BytesIO(GOOD)).extractfile(INDEX_MEMBER).read())


def edited(change) -> bytes:
    index = good_index()
    change(index)
    return with_index(json.dumps(index).encode())


def location_field(field, value):
    def change(index):
        index["locations"][1][field] = value

    return change


HOSTILE = {
    "empty": b"",
    "short": b"not a tar",
    "zeros": b"\0" * 4096,
    "cut": GOOD[: len(GOOD.rstrip(b"\0")) - 8],  # the last timestamp's bytes run past the end
    "index-a-list": with_index(b"[1, 2]"),
    "index-a-string": with_index(b'"secoctl-training-shard/1"'),
    "index-not-json": with_index(b'{"format": '),
    "index-not-utf8": with_index(b"\xff\xfe{}"),
    "index-nested": with_index(b"[" * 200_000 + b"]" * 200_000),
    "locations-a-dict": edited(lambda i: i.__setitem__("locations", {"a": 1})),
    "locations-none": edited(lambda i: i.__setitem__("locations", [])),
    "location-a-number": edited(lambda i: i["locations"].__setitem__(0, 7)),
    "key-a-list": edited(location_field("key", [1])),
    "shape-negative": edited(location_field("shape", [-1, 4, 4])),
    "shape-zero": edited(location_field("shape", [0, 0, 0])),
    "shape-smaller": edited(location_field("shape", [1, 1, 1])),
    "shape-four-dims": edited(location_field("shape", [3, 4, 4, 1])),
    "shape-floats": edited(location_field("shape", [3.0, 4, 4])),
    "shape-bools": edited(location_field("shape", [True, True, True])),
    "shape-huge": edited(location_field("shape", [10**30, 10**30, 10**30])),
    "offsets-infinite": with_index(json.dumps(good_index()).replace("[", "[1e400, ", 1).encode()),
    "offsets-nan": edited(location_field("offsets", [float("nan")])),
    "offsets-negative": edited(location_field("offsets", [-512])),
    "offsets-huge": edited(location_field("offsets", [2**200])),
    "offsets-empty": edited(location_field("offsets", [])),
    "offsets-another-member": edited(lambda i: i["locations"][1].__setitem__("offsets", i["locations"][0]["offsets"])),
    "offsets-a-json-member": edited(lambda i: i["locations"][0]["offsets"].__setitem__(0, 0)),
    "format-other": edited(lambda i: i.__setitem__("format", "\x1b]0;x\x07" * 1000)),
    "index-claims-64MiB": with_index(b"{}")[:124] + f"{64 * 2**20:011o}\0".encode() + with_index(b"{}")[136:],
    "index-all-commas": with_index(b"[" + b"0," * (MAX_INDEX_BYTES // 2 - 8) + b"0]"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_shard_is_refused_in_one_line_naming_its_file(tmp_path, name):
    path = tmp_path / f"{name}.tar"
    path.write_bytes(HOSTILE[name])
    with pytest.raises(ValueError) as error:
        TrainingShard(path)
    message = str(error.value)
    assert message.startswith(f"{path}: not a training shard (") and "\n" not in message and len(message) < 400
    assert "\x1b" not in message
    failure = classify(error.value, Where("pretrain", 0, "s3://bucket"))
    assert failure is not None and failure.cause == message  # the part's one line, not a traceback


def test_a_good_shard_still_opens_and_its_shape_is_the_shards(tmp_path):
    (tmp_path / "good.tar").write_bytes(GOOD)
    shard = TrainingShard(tmp_path / "good.tar")
    assert shard.shape == (3, 4, 4) and len(shard) == 3


def test_refusing_the_largest_index_the_header_allows_costs_little_memory(tmp_path):
    path = tmp_path / "wide.tar"
    path.write_bytes(HOSTILE["index-all-commas"])
    tracemalloc.start()
    with pytest.raises(ValueError, match="more than"):
        TrainingShard(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * MAX_INDEX_BYTES  # the bytes looked at, not a Python object per value


def test_a_shard_whose_locations_are_smaller_than_the_runs_is_refused_not_broadcast(tmp_path):
    paths = []
    for number, size in enumerate((16, 1)):
        path = tmp_path / f"{number}.tar"
        path.write_bytes(encode(made_locations(4, bands=3 if size > 1 else 1, size=size, first=4 * number)))
        paths.append(ShardRef(path.as_uri(), 4))
    batches = SeasonalBatches(
        paths,
        "seco",
        4,
        seed=0,
        rank=0,
        world_size=1,
        cache=ShardCache(tmp_path / "cache", 10**9, in_place=True),
        buffer=1,
    )
    arrays = batches.arrays()
    with pytest.raises(ValueError) as error:
        for _ in range(8):
            next(arrays)
    assert str(error.value).startswith(f"{tmp_path}/") and "(1, 1, 1)" in str(error.value)
