"""The storage tree behind every stage, through fsspec so file:// and s3:// read the same.

Writers never leave a partial object where a reader looks: they write a temporary name and
rename it (a local rename is atomic; an object store's put, and a multipart upload's completion,
is atomic per object). A local write that fails (a full disk) removes its temporary.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secoctl.errors import UserError, shown

if TYPE_CHECKING:
    import fsspec


ENV_STORAGE = "SECOCTL_STORAGE"
S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket naming rule
CREDENTIALS_IN_URI = (
    "credentials must not be written into the URI (user:password@); name a Secret (storageSecret) instead"
)


def storage_problem(uri: str) -> str | None:
    """Why `uri` cannot be a storage tree, or None: only file:// with an absolute, normalised path and
    s3://BUCKET[/PREFIX] are storage; anything else would write somewhere else (a relative folder, the
    file system's root) or nowhere (memory://), or fail later with a traceback."""
    scheme, separator, path = uri.partition("://")
    if not separator or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        return f"{shown(uri)} is not a URI such as file:///data/seco or s3://bucket/seco"
    if "@" in path.split("/", 1)[0]:
        return CREDENTIALS_IN_URI
    if any(ord(c) < 32 or ord(c) == 127 for c in uri):
        return f"{shown(uri)} holds a control character (a newline, tab or NUL); write the URI alone"
    if scheme not in ("file", "s3"):
        return f"{shown(uri)}: storage is file:///ABSOLUTE/PATH or s3://BUCKET[/PREFIX]; {scheme}:// is not supported"
    if "?" in path or "#" in path:
        return "a storage URI has no query or fragment ('?', '#'); name a Secret (storageSecret) for credentials"
    if ".." in path.split("/"):
        return f"{shown(uri)} climbs out of its folder with '..'; write the folder it means"
    if scheme == "file":
        if not (path.startswith("/") and posixpath.normpath(path) == path):
            return (
                f"{shown(uri)} is not an absolute, normalised path; write it as "
                f"file://{posixpath.normpath('/' + path.lstrip('/'))}"
            )
        return None
    bucket, _, prefix = path.partition("/")
    if not S3_BUCKET.fullmatch(bucket):
        return (
            f"{shown(uri)} names no S3 bucket (3 to 63 lower-case letters, digits, '.' and '-'); "
            "write s3://BUCKET[/PREFIX]"
        )
    segments = prefix.rstrip("/").split("/") if prefix.rstrip("/") else []
    if any(segment in ("", ".") for segment in segments):
        return f"{shown(uri)} is not a normalised prefix (an empty or '.' segment); write s3://{bucket}/PREFIX"
    return None


def checked_storage(uri: str, source: str) -> str:
    problem = storage_problem(uri)
    if problem:
        raise UserError(f"{source}: {problem}")
    return uri


def resolve(option: str | None = None, own: str | None = None, experiment: str = "") -> tuple[str, str]:
    """(storage URI, where it came from) by the one precedence every command and stage follows: the spec's
    own spec.storage, then --storage, then $SECOCTL_STORAGE, then the embedded default.

    A spec's storage is where its work already is: a --storage naming another tree is refused rather than
    either silently winning. The caller validates the choice: `storage` below, or the spec model.
    """
    if option and own and option != own:
        raise UserError(
            f"--storage {shown(option)} differs from {experiment}'s spec.storage {shown(own)}; "
            "drop --storage or change spec.storage"
        )
    if own:
        return own, "spec.storage"
    if option:
        return option, "--storage"
    return default_storage()


def default_storage() -> tuple[str, str]:
    """Where a command works when neither a spec nor --storage names a tree: $SECOCTL_STORAGE, else the
    embedded default."""
    configured = os.environ.get(ENV_STORAGE)
    return (configured, f"${ENV_STORAGE}") if configured else (home_storage(), "the embedded default")


def storage(option: str | None = None, own: str | None = None, experiment: str = "") -> str:
    """The storage tree a command or stage works on (`resolve`), validated: exit 2 and nothing written otherwise."""
    return checked_storage(*resolve(option, own, experiment))


def home_storage() -> str:
    """The embedded default: a folder under the user's data directory, nothing to set up."""
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return (data_home / "secoctl").as_uri()


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts if p)])


@dataclass(frozen=True)
class Timeouts:
    """How long one object-store request may take: to connect, between bytes read, how many times it is
    tried (s3fs's own retry loop, `_transient` below; botocore's is turned off so the two do not
    multiply), and the whole call at most (fsspec's deadline, for the calls in this module).

    s3fs waits 0.1 s × 1.7^i after the i-th failed try (capped at 15 s): 2 tries wait 0.1 s in all,
    8 tries about 10 s, so a stage rides out a burst of 5xx answers or resets that long."""

    connect_s: float
    read_s: float
    attempts: int
    deadline_s: float


# A command a person waits for answers within half a minute; a stage rides out a slow store for longer.
CONTROL_PLANE = Timeouts(connect_s=5, read_s=10, attempts=2, deadline_s=30)
DATA_PLANE = Timeouts(connect_s=10, read_s=60, attempts=8, deadline_s=600)
_timeouts = CONTROL_PLANE


def use_timeouts(timeouts: Timeouts) -> None:
    """Set this process's object-store timeouts: the stages and the driver call it with DATA_PLANE."""
    global _timeouts
    _timeouts = timeouts


TRANSIENT_STATUS = frozenset({500, 502, 503, 504})  # the object store's, or a proxy's, passing failures


def _transient(error: Exception) -> bool:
    """What s3fs's retry loop retries besides its own list (read timeouts, cut bodies, SlowDown): a 5xx
    answer (InternalError, ServiceUnavailable) and a connection refused or reset, which it gives up on
    at the first try. Every S3 call secoctl makes is idempotent, so each may be sent again."""
    from botocore.exceptions import ClientError
    from botocore.exceptions import ConnectionError as EndpointUnreachable

    if isinstance(error, EndpointUnreachable):
        return True
    return (
        isinstance(error, ClientError)
        and error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in TRANSIENT_STATUS
    )


def filesystem(uri: str) -> tuple["fsspec.AbstractFileSystem", str]:
    import fsspec  # imported on first use: `render` and `validate` never touch storage

    scheme, _, path = uri.rpartition("://")
    if scheme not in ("", "file") and ".." in path.split("/"):
        raise UserError(f"{uri}: '..' is not allowed in an object store path (keys are not folders)")
    options = {}
    if uri.startswith("s3://"):
        # Listings are never cached: a marker another process wrote must be seen at once.
        options = {
            "use_listings_cache": False,
            "config_kwargs": {
                "connect_timeout": _timeouts.connect_s,
                "read_timeout": _timeouts.read_s,
                "retries": {"total_max_attempts": 1},
            },
        }
    try:
        fs, path = fsspec.core.url_to_fs(uri, **options)
    except (ImportError, ValueError) as error:  # a backend that is not installed, a protocol fsspec does not know
        raise UserError(f"{uri}: {one_line(error)}") from None
    if options:
        import s3fs

        s3fs.set_custom_error_handler(_transient)
        fs.retries = _timeouts.attempts
    return fs, path


def _deadline(fs: "fsspec.AbstractFileSystem") -> dict[str, float]:
    """The keyword that bounds one whole call of an object store (fsspec's sync); a local call takes none."""
    from fsspec.asyn import AsyncFileSystem

    return {"timeout": _timeouts.deadline_s} if isinstance(fs, AsyncFileSystem) else {}


def endpoint() -> str:
    """The S3 endpoint the AWS variables name, for messages."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "the S3 endpoint"


def one_line(error: BaseException, limit: int = 300) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def _is_storage_failure(error: Exception) -> bool:
    if isinstance(error, OSError):
        return True
    botocore = sys.modules.get("botocore.exceptions")  # loaded only if an s3:// storage was used
    return botocore is not None and isinstance(error, (botocore.BotoCoreError, botocore.ClientError))


@contextmanager
def reported(storage: str) -> Iterator[None]:
    """Storage failures a person fixes outside secoctl (credentials, endpoint, permissions, space) as one line."""
    try:
        yield
    except Exception as error:
        if not _is_storage_failure(error):
            raise
        if isinstance(error, TimeoutError):  # fsspec's deadline for a whole call
            raise UserError(
                f"storage {storage}: no answer from {endpoint()} within {_timeouts.deadline_s:g} s; "
                "check the endpoint and the network"
            ) from None
        if isinstance(error, OSError) and error.filename:  # a local file: the message names it
            raise UserError(one_line(error)) from None
        if isinstance(error, PermissionError):
            raise UserError(f"storage {storage}: access denied ({one_line(error)}); check its credentials") from None
        raise UserError(f"storage {storage}: {one_line(error)}") from None


MULTIPART_CHUNK = 8 * 2**20  # object-store uploads above this go in parts


def _replace_locally(path: str, write: Callable[[str], None]) -> None:
    """`write` a temporary beside `path`, then rename it over `path`; a write that fails leaves neither.

    The temporary's name carries none of the final name, so a reader that picks files by name
    (TensorBoard takes any name containing "tfevents") skips it."""
    parent = path.rpartition("/")[0]
    os.makedirs(parent, exist_ok=True)
    temporary = f"{parent}/.{uuid.uuid4().hex}.tmp"
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        with suppress(FileNotFoundError):
            os.remove(temporary)
        if isinstance(error, OSError) and error.filename is None:  # write() names no file (ENOSPC): name the object
            raise OSError(error.errno, error.strerror, path) from error
        raise


def upload_file(local: str | Path, uri: str) -> None:
    """Copy a local file to `uri` whole: multipart above MULTIPART_CHUNK on S3, rename locally."""
    from fsspec.implementations.local import LocalFileSystem

    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        _replace_locally(path, lambda temporary: fs.put_file(str(local), temporary))
    else:
        fs.put_file(str(local), path, chunksize=MULTIPART_CHUNK)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path, **_deadline(fs))


def read_text(uri: str) -> str:
    return read_bytes(uri).decode()


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    return fs.cat_file(path, **_deadline(fs))


def read_json(uri: str) -> Any:
    return json.loads(read_text(uri))


def read_json_or_none(uri: str) -> Any:
    try:
        return read_json(uri)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_bytes(uri: str, data: bytes) -> None:
    """Write whole or not at all."""
    from fsspec.implementations.local import LocalFileSystem

    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        _replace_locally(path, lambda temporary: Path(temporary).write_bytes(data))
    else:
        fs.pipe_file(path, data, **_deadline(fs))


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode())


def write_json(uri: str, value: Any) -> None:
    write_text(uri, json.dumps(value, indent=1, sort_keys=True) + "\n")


def list_names(uri: str) -> list[str]:
    """Names directly under a prefix; empty when the prefix does not exist or is a file."""
    fs, path = filesystem(uri)
    try:
        entries = fs.ls(path, detail=False, **_deadline(fs))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)


def is_missing(uri: str) -> bool:
    """Whether a storage root is absent rather than empty: its file:// folder, or its object store's bucket.

    An object store has no empty folders, so below the bucket absent and empty are one and the same.
    """
    from fsspec.implementations.local import LocalFileSystem

    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        return not fs.isdir(path)
    try:
        fs.ls(path.split("/", 1)[0], **_deadline(fs))
    except FileNotFoundError:
        return True
    return False


def remove(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path, **_deadline(fs)):
        fs.rm(path, recursive=True, **_deadline(fs))


CREATE_REFUSED = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})


def create_exclusive(uri: str, data: bytes) -> bool:
    """Create `uri` holding `data` only if nothing is there: True when this call made it, False when it existed.

    Of any number of concurrent callers on one key exactly one gets True. A file system does it with a link
    of a written temporary (the link fails with EEXIST, and a reader never sees the file half-written); S3
    with a conditional PUT (`If-None-Match: *`, refused with 412 PreconditionFailed, or 409 while a
    concurrent one is in flight)."""
    from fsspec.implementations.local import LocalFileSystem

    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        parent = path.rpartition("/")[0]
        os.makedirs(parent, exist_ok=True)
        temporary = f"{parent}/.{uuid.uuid4().hex}.tmp"
        try:
            Path(temporary).write_bytes(data)
            os.link(temporary, path)
            return True
        except FileExistsError:
            return False
        finally:
            with suppress(FileNotFoundError):
                os.remove(temporary)
    bucket, _, key = path.partition("/")
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*", **_deadline(fs))
    except OSError as error:  # s3fs translates botocore's ClientError and keeps it as the cause
        answer = getattr(error.__cause__, "response", None) or {}
        code = str(answer.get("Error", {}).get("Code", ""))
        status = str(answer.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if isinstance(error, FileExistsError) or code in CREATE_REFUSED or status in CREATE_REFUSED:
            return False
        raise
    return True
