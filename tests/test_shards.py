import numpy as np
import pytest

from jobs.common.shards import Sample, read_shard, shard_entries, write_shard


def sample(key: str, seed: int) -> Sample:
    pixels = np.random.default_rng(seed).integers(0, 10_000, (5, 3, 16, 16), dtype=np.uint16)
    return Sample(key, pixels, {"dates": ["2021-01-01"] * 5, "bands": ["B04", "B03", "B02"]})


def test_a_shard_round_trips_every_sample_exactly(tmp_path):
    uri = (tmp_path / "shards" / "00000-000.tar").as_uri()
    written = [sample(f"{i:06d}", i) for i in range(4)]
    entry = write_shard(uri, written)
    assert entry == {"uri": uri, "samples": 4, "keys": ["000000", "000001", "000002", "000003"]}
    read = list(read_shard(uri))
    assert [s.key for s in read] == entry["keys"]
    for a, b in zip(written, read):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        assert a.metadata == b.metadata
    assert [p.name for p in (tmp_path / "shards").iterdir()] == ["00000-000.tar"], "no temporary left"


def test_only_uint16_reflectance_cubes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="pixels must be uint16"):
        write_shard((tmp_path / "x.tar").as_uri(), [Sample("a", np.zeros((3, 16, 16), np.uint8), {})])
    assert not (tmp_path / "x.tar").exists()


def test_shards_are_listed_from_the_collect_index_in_a_fixed_order():
    index = {
        "parts": [
            {"summary": {"shards": [{"uri": "s3://b/1.tar", "samples": 4}, {"uri": "s3://b/0.tar", "samples": 4}]}},
            {"summary": {"shards": [{"uri": "s3://b/2.tar", "samples": 2}]}},
        ]
    }
    assert [e["uri"] for e in shard_entries(index)] == ["s3://b/0.tar", "s3://b/1.tar", "s3://b/2.tar"]
    assert [e["samples"] for e in shard_entries(index)] == [4, 4, 2]
