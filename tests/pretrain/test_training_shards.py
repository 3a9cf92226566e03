"""Training shards: a tar any reader opens, offsets the loader can trust, and a loader that reads each shard once."""

import io
import tarfile

import numpy as np
import pytest

from jobs.common.training_shards import Location, TrainingShard, encode
from jobs.pretrain.loader import SeasonalBatches, ShardRef, reader_shards
from jobs.pretrain.shard_cache import ShardCache
from secoctl import store


def made_locations(count: int, timestamps: int = 5, bands: int = 3, size: int = 16, first: int = 0) -> list[Location]:
    rng = np.random.default_rng(first)
    return [
        Location(
            f"{first + i:06d}",
            rng.integers(0, 256, (timestamps, bands, size, size), dtype=np.uint8),
            {"bands": [f"B{b}" for b in range(bands)]},
        )
        for i in range(count)
    ]


def test_a_training_shard_is_a_plain_tar_whose_index_points_at_each_timestamp(tmp_path):
    locations = made_locations(3, bands=12)  # the format does not assume RGB
    path = tmp_path / "shard.tar"
    path.write_bytes(encode(locations))
    with tarfile.open(path) as archive:  # any tar reader: WebDataset layout
        names = archive.getnames()
        member = archive.getmember("000001.t3.u8")
        raw = archive.extractfile(member).read()
    assert names[0] == "__index__.json" and "000002.json" in names and len(names) == 1 + 3 * 6
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(12, 16, 16), locations[1].pixels[3])
    shard = TrainingShard(path)
    assert len(shard) == 3 and shard.timestamps(2) == 5
    for location in range(3):
        np.testing.assert_array_equal(shard.location(location), locations[location].pixels)


def test_a_damaged_shard_is_refused_in_one_line(tmp_path):
    good = encode(made_locations(2))
    bad = tmp_path / "bad.tar"
    bad.write_bytes(good[: len(good) // 2])  # cut: offsets now point past the end
    with pytest.raises(ValueError, match="not a training shard") as error:
        TrainingShard(bad)
    assert "\n" not in str(error.value)
    other = io.BytesIO()
    with tarfile.open(fileobj=other, mode="w") as archive:
        info = tarfile.TarInfo("something.json")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"{}"))
    (tmp_path / "other.tar").write_bytes(other.getvalue())
    with pytest.raises(ValueError, match="first member must be __index__.json"):
        TrainingShard(tmp_path / "other.tar")


def test_shards_are_dealt_out_so_every_location_is_read_once_an_epoch_by_exactly_one_reader():
    for sizes, readers in (([8] * 10, 4), ([8] * 3, 7), ([5, 9], 2), ([8], 3)):
        for epoch in (0, 1):
            seen = []
            for slot in range(readers):
                for shard, part in reader_shards(sizes, readers, slot, epoch, seed=0):
                    seen += [(shard, i) for i in range(sizes[shard])[part]]
            assert sorted(seen) == [(s, i) for s, n in enumerate(sizes) for i in range(n)]
    # More shards than readers: a reader opens only its own shards.
    assert len(reader_shards([8] * 10, 4, 0, 0, seed=0)) == 3
    assert reader_shards([8] * 10, 4, 0, 0, seed=0) != reader_shards([8] * 10, 4, 0, 1, seed=0)


def _write_shards(root: str, shards: int, per_shard: int) -> list[ShardRef]:
    refs = []
    for number in range(shards):
        uri = store.join(root, f"{number:05d}.tar")
        store.write_bytes(uri, encode(made_locations(per_shard, first=number * per_shard)))
        refs.append(ShardRef(uri, per_shard))
    return refs


def test_batches_mix_shards_and_draw_the_views_timestamps_from_one_location(tmp_path):
    refs = _write_shards(tmp_path.as_uri(), 6, 4)
    cache = ShardCache(tmp_path / "cache", 10**9, in_place=True)
    batches = SeasonalBatches(refs, "seco", 8, seed=0, rank=0, world_size=1, cache=cache)
    batch = next(batches.arrays())
    assert batch.shape == (8, 3, 3, 16, 16) and batch.dtype == np.uint8  # seco draws 3 timestamps a sample
    originals = {loc.key: loc.pixels for number in range(6) for loc in made_locations(4, first=number * 4)}
    shards_in_batch = set()
    for sample in batch:
        matches = [
            key for key, pixels in originals.items() if all(any(np.array_equal(t, p) for p in pixels) for t in sample)
        ]
        assert len(matches) == 1  # all three timestamps come from one location
        shards_in_batch.add(int(matches[0]) // 4)
    assert len(shards_in_batch) > 2  # the shuffle buffer mixes shards
    assert cache.fetches == []  # file:// storage is read in place


def test_after_the_first_epoch_nothing_is_read_from_object_storage_again(s3_storage, tmp_path):
    refs = _write_shards(store.join(s3_storage, "training"), 5, 4)
    cache = ShardCache(tmp_path / "cache", 10**9)
    batches = SeasonalBatches(refs, "moco-tp", 4, seed=0, rank=0, world_size=1, cache=cache)
    arrays = batches.arrays()
    first_epoch = len(cache.fetches)
    for _ in range(5 * 20 // 4):  # 5 epochs of 20 locations
        next(arrays)
    assert sorted(cache.fetches) == sorted(ref.uri for ref in refs)  # each shard fetched exactly once
    assert first_epoch >= 1 and cache.fetched_bytes == sum(len(store.read_bytes(r.uri)) for r in refs)


def test_the_cache_keeps_to_its_budget_least_recently_used_first(s3_storage, tmp_path):
    refs = _write_shards(store.join(s3_storage, "small-cache"), 3, 2)
    one_shard = len(store.read_bytes(refs[0].uri))
    cache = ShardCache(tmp_path / "cache", budget_bytes=2 * one_shard)

    def read(uri):
        path = cache.path(uri)
        cache.release(path)  # mapped by the reader: evictable from now on
        return path

    first, second = read(refs[0].uri), read(refs[1].uri)
    read(refs[0].uri)  # used again: now the second is the least recent
    read(refs[2].uri)
    assert first.exists() and not second.exists()
    assert cache.fetches == [refs[0].uri, refs[1].uri, refs[2].uri]
