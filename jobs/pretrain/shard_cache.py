"""The node-local cache of training shards: the first epoch streams them from storage, later epochs read disk.

Every rank on a node shares one cache folder (the pod's /tmp, sized from resources.ephemeralStorage).
A shard is fetched once under a per-shard lock, to a temporary name, then renamed, so a rank never
maps half a file; beyond the byte budget the least recently used shards go first (a rank still
reading an evicted shard keeps its mapping: Linux frees the file when the last map closes). Shards
on a local file:// storage are read where they lie: that already is local disk.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import threading
from pathlib import Path

from secoctl import store

CACHE_DIR = "SECOCTL_SHARD_CACHE"
CACHE_BYTES = "SECOCTL_SHARD_CACHE_BYTES"


def local_file(uri: str) -> Path | None:
    """The path of a file:// (or bare path) URI, or None for an object store."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    if "://" not in uri:
        return Path(uri)
    return None


class ShardCache:
    def __init__(self, folder: str | Path, budget_bytes: int, in_place: bool = False):
        """in_place: read file:// shards where they lie instead of copying them into `folder`."""
        self.folder, self.budget_bytes, self.in_place = Path(folder), budget_bytes, in_place
        self.fetched_bytes = 0
        self.fetches: list[str] = []  # every URI read from storage, in order: what the re-read test counts
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, experiment: str, default_bytes: int) -> "ShardCache":
        """Pods name their cache folder (render sets it on the pod's local disk); a local run caches
        object storage under the temporary folder and reads file:// storage in place."""
        folder = os.environ.get(CACHE_DIR)
        budget = int(os.environ.get(CACHE_BYTES) or default_bytes)
        if folder:
            return cls(folder, budget)
        return cls(Path(tempfile.gettempdir()) / "secoctl-shard-cache" / experiment, budget, in_place=True)

    def path(self, uri: str) -> Path:
        """A local path holding the shard at `uri`, fetched now if the cache lacks it."""
        direct = local_file(uri)
        if self.in_place and direct is not None:
            return direct
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / (hashlib.sha256(uri.encode()).hexdigest()[:24] + ".tar")
        with open(target.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one rank of the node fetches it; the others wait and reuse it
            if target.exists():
                os.utime(target)
                return target
            temporary = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            fs, remote = store.filesystem(uri)
            fs.get_file(remote, str(temporary))
            os.replace(temporary, target)
            size = target.stat().st_size
            with self._lock:
                self.fetches.append(uri)
                self.fetched_bytes += size
        self._evict(keep=target)
        return target

    def _evict(self, keep: Path) -> None:
        shards = []
        for entry in self.folder.glob("*.tar"):
            try:
                status = entry.stat()
            except FileNotFoundError:
                continue
            shards.append((status.st_mtime, status.st_size, entry))
        total = sum(size for _, size, _ in shards)
        for _, size, entry in sorted(shards, key=lambda s: s[0]):
            if total <= self.budget_bytes:
                break
            if entry != keep:
                entry.unlink(missing_ok=True)
                total -= size
