"""The node's shard cache: keyed on what a shard holds, private to its user, checked before it is served, and
never evicting a shard a rank has fetched ahead, whatever the budget.

The hostile cases plant what another process of the same machine could: links and files in place of the
cache's folder, its shards and its locks. Each is either fetched again from storage or refused in one line
naming the path; nothing outside the cache is written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jobs.common.failures import PartFailure
from jobs.common.training_shards import encode
from jobs.pretrain.loader import SeasonalBatches, ShardRef
from jobs.pretrain.shard_cache import ShardCache, private_folder
from secoctl import store
from tests.pretrain.test_training_shards import made_locations


def test_a_shard_rewritten_under_its_uri_is_fetched_again_not_served_stale(s3_storage, tmp_path):
    uri = store.join(s3_storage, "stale", "00000.tar")
    store.write_bytes(uri, encode(made_locations(2, bands=3)))
    ShardCache(tmp_path / "cache", 10**9).path(uri)
    store.write_bytes(uri, encode(made_locations(2, bands=4)))  # a purge and a re-apply with other inputBands
    again = ShardCache(tmp_path / "cache", 10**9)  # the re-applied run's process
    assert again.path(uri).read_bytes() == store.read_bytes(uri) and again.fetches == [uri]
    unchanged = ShardCache(tmp_path / "cache", 10**9)
    assert unchanged.path(uri).read_bytes() == store.read_bytes(uri) and unchanged.fetches == []


def test_a_local_run_caches_in_the_users_own_folder_made_private(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SECOCTL_SHARD_CACHE", raising=False)
    cache = ShardCache.from_environment("mini", default_bytes=10**9)
    assert cache.folder == tmp_path / "xdg" / "secoctl" / "shard-cache" / "mini"
    cache._folder()
    for folder in (cache.folder, cache.folder.parent, cache.folder.parent.parent):
        assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700


def _planted_folder(kind: str, folder: Path, elsewhere: Path) -> None:
    if kind == "link":
        folder.symlink_to(elsewhere, target_is_directory=True)
    elif kind == "file":
        folder.write_bytes(b"")
    elif kind == "world-writable":
        folder.mkdir(mode=0o700)
        folder.chmod(0o777)
    elif kind == "group-writable":
        folder.mkdir(mode=0o700)
        folder.chmod(0o770)
    elif kind == "another-users":
        if os.geteuid() != 0:
            pytest.skip("only root can give a folder to another user")
        folder.mkdir(mode=0o700)
        os.chown(folder, 4242, 4242)


@pytest.mark.parametrize("kind", ["link", "file", "world-writable", "group-writable", "another-users"])
def test_a_cache_folder_anyone_else_could_write_is_refused_in_one_line(tmp_path, kind):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _planted_folder(kind, tmp_path / "cache", elsewhere)
    with pytest.raises(PartFailure) as error:
        private_folder(tmp_path / "cache")
    assert str(tmp_path / "cache") in str(error.value) and "\n" not in str(error.value)
    assert list(elsewhere.iterdir()) == []


def _cached_name(uri: str, folder: Path) -> str:
    cache = ShardCache(folder, 10**9)
    cache.path(uri)
    (name,) = {p.stem for p in folder.glob("*.tar")}
    return name


PLANTED_SHARDS = ["link-to-another-file", "empty", "cut", "longer", "folder"]


@pytest.mark.parametrize("kind", PLANTED_SHARDS)
def test_a_planted_shard_is_fetched_again_or_refused_never_served(s3_storage, tmp_path, kind):
    uri = store.join(s3_storage, "planted", f"{kind}.tar")
    store.write_bytes(uri, encode(made_locations(2)))
    folder = tmp_path / "cache"
    name = _cached_name(uri, folder)
    shard = folder / f"{name}.tar"
    victim = tmp_path / "victim"
    victim.write_bytes(b"root-only secret")
    shard.unlink()
    if kind == "link-to-another-file":
        shard.symlink_to(victim)
    elif kind == "empty":
        shard.write_bytes(b"")
    elif kind == "cut":
        shard.write_bytes(store.read_bytes(uri)[:-1])
    elif kind == "longer":
        shard.write_bytes(store.read_bytes(uri) + b"planted")
    elif kind == "folder":
        shard.mkdir()
    cache = ShardCache(folder, 10**9)
    try:
        served = cache.path(uri)
    except OSError as error:
        assert kind == "folder" and str(shard) in str(error) and "\n" not in str(error)
    else:
        assert not served.is_symlink() and served.read_bytes() == store.read_bytes(uri) and cache.fetches == [uri]
    assert victim.read_bytes() == b"root-only secret"


@pytest.mark.parametrize("lock", ["lock", "fetch"])
def test_a_lock_planted_as_a_link_is_not_followed(s3_storage, tmp_path, lock):
    uri = store.join(s3_storage, "locks", f"{lock}.tar")
    store.write_bytes(uri, encode(made_locations(2)))
    folder = tmp_path / "cache"
    name = _cached_name(uri, folder)
    (folder / f"{name}.tar").unlink()
    victim = tmp_path / "victim"
    victim.write_bytes(b"root-only secret")
    (folder / f"{name}.{lock}").unlink()
    (folder / f"{name}.{lock}").symlink_to(victim)
    with pytest.raises(OSError) as error:
        ShardCache(folder, 10**9).path(uri)
    assert str(folder / f"{name}.{lock}") in str(error.value)
    assert victim.read_bytes() == b"root-only secret"


@pytest.mark.parametrize("budget_shards", [1, 2, 4])
def test_any_budget_trains_with_shards_fetched_ahead(s3_storage, tmp_path, budget_shards):
    refs = []
    for number in range(8):
        uri = store.join(s3_storage, f"budget-{budget_shards}", f"{number:05d}.tar")
        store.write_bytes(uri, encode(made_locations(2, first=2 * number)))
        refs.append(ShardRef(uri, 2))
    one_shard = len(store.read_bytes(refs[0].uri))
    cache = ShardCache(tmp_path / "cache", budget_bytes=budget_shards * one_shard)
    batches = SeasonalBatches(refs, "seco", 4, seed=0, rank=0, world_size=1, cache=cache, fetch_ahead=4, buffer=1)
    arrays = batches.arrays()
    for _ in range(3 * 16 // 4):  # three epochs of 16 locations
        next(arrays)
    assert batches.read_locations == 48
    assert len(cache.fetches) > len(refs)  # a small cache fetches again, and trains
    assert not cache._pins or all(len(v) <= 4 + 1 for v in cache._pins.values())
