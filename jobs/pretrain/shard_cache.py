"""The node-local cache of training shards: the first epoch streams them from storage, later epochs read disk.

Every rank on a node shares one cache folder: the pod's /tmp (sized from resources.ephemeralStorage), or
a local run's per-user cache (XDG_CACHE_HOME, else ~/.cache). The folder is private: created 0700, and
refused when another user owns it or others may write to it, so nobody else can plant or swap a shard.

A cached shard is named after its content, not its URI: the storage's version of the object (its ETag,
or size and mtime), read once per process, so a shard rewritten under the same URI (a purge and a
re-apply with other inputBands) is fetched again. It is served only when its size is the object's.

A shard is fetched once under a per-shard lock, to a temporary name, then renamed, so a rank never
maps half a file. From `path` until the rank has mapped it (`release`) a shard is pinned: beyond the
byte budget the least recently used shards go first, but never one a rank on the node has fetched
ahead and not yet opened, so any budget trains (a smaller one only fetches more often).
An evicted shard a rank still reads keeps its mapping: Linux frees the file when the last map closes.
Shards on a local file:// storage are read where they lie: that already is local disk.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import threading
import time
from pathlib import Path

from jobs.common.failures import PartFailure
from secoctl import store

CACHE_DIR = "SECOCTL_SHARD_CACHE"
CACHE_BYTES = "SECOCTL_SHARD_CACHE_BYTES"
LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def local_file(uri: str) -> Path | None:
    """The path of a file:// (or bare path) URI, or None for an object store."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    if "://" not in uri:
        return Path(uri)
    return None


def user_cache_root() -> Path:
    """This user's cache folder for secoctl, as the XDG base directory specification places it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "secoctl"


def private_folder(root: Path, *names: str) -> Path:
    """`root`/`names`, each folder created 0700 if absent and refused unless this user alone may write it."""
    for depth in range(len(names) + 1):
        folder = root.joinpath(*names[:depth])
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except FileExistsError:
            pass  # a file or a dangling link: lstat below says which
        status = os.lstat(folder)
        if not stat.S_ISDIR(status.st_mode):
            problem = "is not a folder (a link or a file)"
        elif status.st_uid != os.geteuid():
            problem = f"belongs to uid {status.st_uid}, not this user ({os.geteuid()})"
        elif status.st_mode & 0o022:
            problem = f"is writable by its group or others (mode {stat.S_IMODE(status.st_mode):o})"
        else:
            continue
        raise PartFailure(
            f"shard cache {folder} {problem}: another user could plant shards in it; "
            f"remove it or set {CACHE_DIR} to a folder of your own",
            None,
        )
    return root.joinpath(*names)


class ShardCache:
    def __init__(self, folder: str | Path, budget_bytes: int, in_place: bool = False):
        """in_place: read file:// shards where they lie instead of copying them into `folder`."""
        self.folder, self.budget_bytes, self.in_place = Path(folder), budget_bytes, in_place
        self.fetched_bytes = 0
        self.fetches: list[str] = []  # every URI read from storage, in order: what the re-read test counts
        self._versions: dict[str, tuple[str, int]] = {}  # uri -> (cache name, size) from the storage
        self._pins: dict[Path, list[int]] = {}  # shard -> lock descriptors held shared until it is opened
        self._lock = threading.Lock()
        self._ready = False

    @classmethod
    def from_environment(cls, experiment: str, default_bytes: int) -> ShardCache:
        """Pods name their cache folder (render sets it on the pod's local disk); a local run caches
        object storage in this user's cache folder and reads file:// storage in place."""
        folder = os.environ.get(CACHE_DIR)
        budget = int(os.environ.get(CACHE_BYTES) or default_bytes)
        if folder:
            return cls(folder, budget)
        return cls(user_cache_root() / "shard-cache" / experiment, budget, in_place=True)

    def _folder(self) -> Path:
        if not self._ready:
            default = user_cache_root() / "shard-cache"
            if self.folder.parent == default:  # the secoctl folders above it are this user's too
                private_folder(default.parent, default.name, self.folder.name)
            else:
                private_folder(self.folder)
            self._ready = True
        return self.folder

    def _version(self, uri: str) -> tuple[str, int]:
        """The cache's name for what `uri` holds now, and its size: one HEAD per shard and process."""
        with self._lock:
            known = self._versions.get(uri)
        if known:
            return known
        fs, remote = store.filesystem(uri)
        info = fs.info(remote)
        size = int(info["size"])
        version = [str(info.get(key)) for key in ("ETag", "etag", "LastModified", "mtime", "ino") if info.get(key)]
        name = hashlib.sha256("\0".join([uri, str(size), *version]).encode()).hexdigest()[:32]
        with self._lock:
            self._versions[uri] = (name, size)
        return name, size

    def path(self, uri: str) -> Path:
        """A local path holding what the shard at `uri` holds now, fetched if the cache lacks it. The
        shard is pinned (never evicted) until `release(path)`, which the reader calls once it has mapped it."""
        direct = local_file(uri)
        if self.in_place and direct is not None:
            return direct
        folder = self._folder()
        name, size = self._version(uri)
        target = folder / f"{name}.tar"
        while True:
            # A shared lock on <name>.lock pins the shard: no rank evicts it while any rank holds one.
            pin = os.open(folder / f"{name}.lock", LOCK_FLAGS, 0o600)
            fcntl.flock(pin, fcntl.LOCK_SH)
            if _holds(target, size):
                break
            os.close(pin)
            # One rank of the node fetches it under <name>.fetch; the others wait there, then pin what it fetched.
            # A fetcher holds nothing else while it waits, so ranks reading shards in other orders never deadlock.
            fetching = os.open(folder / f"{name}.fetch", LOCK_FLAGS, 0o600)
            try:
                fcntl.flock(fetching, fcntl.LOCK_EX)
                if not _holds(target, size):
                    self._fetch(uri, target, size)
            finally:
                os.close(fetching)
        now = time.time_ns()  # not the file system's clock, which may tick only every few milliseconds
        os.utime(target, ns=(now, now))
        with self._lock:
            self._pins.setdefault(target, []).append(pin)
        self._evict()
        return target

    def release(self, path: Path) -> None:
        """The reader has mapped `path`: the shard may be evicted from now on. Nothing for a shard read in place."""
        with self._lock:
            held = self._pins.get(path)
            lock = held.pop() if held else None
            if held == []:
                del self._pins[path]
        if lock is not None:
            os.close(lock)

    def _fetch(self, uri: str, target: Path, size: int) -> None:
        temporary = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        fs, remote = store.filesystem(uri)
        try:
            fs.get_file(remote, str(temporary))
            fetched = os.lstat(temporary).st_size
            if fetched != size:
                raise OSError(f"{uri}: fetched {fetched} bytes where the storage said {size}; it changed meanwhile")
            os.replace(temporary, target)
        finally:
            if temporary.exists():
                temporary.unlink()
        with self._lock:
            self.fetches.append(uri)
            self.fetched_bytes += size

    def _evict(self) -> None:
        shards = []
        for entry in self.folder.glob("*.tar"):
            try:
                status = os.lstat(entry)
            except FileNotFoundError:
                continue
            shards.append((status.st_mtime_ns, status.st_size, entry))
        total = sum(size for _, size, _ in shards)
        for _, size, entry in sorted(shards, key=lambda s: s[0]):
            if total <= self.budget_bytes:
                break
            if self._evict_unpinned(entry):
                total -= size

    def _evict_unpinned(self, entry: Path) -> bool:
        """Remove `entry` unless some rank holds its lock (fetching it, or fetched and not yet opened)."""
        try:
            lock = os.open(entry.with_suffix(".lock"), LOCK_FLAGS, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        else:
            entry.unlink(missing_ok=True)
            return True
        finally:
            os.close(lock)


def _holds(target: Path, size: int) -> bool:
    """Whether `target` is a plain file of the object's size (a link or a short file is fetched again)."""
    try:
        status = os.lstat(target)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(status.st_mode) and status.st_size == size
