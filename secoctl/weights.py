"""Published weights: `<storage>/weights/<name>/<version>/{model.safetensors, item.json, SHA256SUMS}`.

A version is committed by its SHA256SUMS, written last, and never changes afterwards (a re-publish
needs force). Pulls land in a local cache only once every checksum matches; an interrupted pull
resumes from the bytes it has, and concurrent pulls of one version take turns (a file lock). Nothing here unpickles: weights are safetensors, and `load` builds
the torchvision ResNet itself. Importing this module does not import torch.

    from secoctl.weights import load
    model, transform = load("seco-resnet18-quickstart:1")
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secoctl import store
from secoctl.errors import UserError

WEIGHTS_FILE = "model.safetensors"
ITEM_FILE = "item.json"
SUMS_FILE = "SHA256SUMS"
NAME = re.compile(r"[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?")
VERSION = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,30}[A-Za-z0-9])?")
READ_CHUNK = 4 * 2**20
MAX_INPUT_SIZE = 8192  # pixels per side of a model's input: a published item claiming more is not a model card


@dataclass(frozen=True)
class WeightsRef:
    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> "WeightsRef":
        name, _, version = text.partition(":")
        check_name(name)
        if version:
            check_version(version)
        return cls(name, version or None)

    def __str__(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name


def check_name(name: str) -> str:
    if not NAME.fullmatch(name) or ".." in name:
        raise UserError(f"weights name {name!r} is invalid: use lower-case letters, digits, '.', '_' and '-' "
                        "(at most 64, starting and ending with a letter or digit)")
    return name


def check_version(version: str) -> str:
    if not VERSION.fullmatch(version) or ".." in version:
        raise UserError(f"weights version {version!r} is invalid: use letters, digits, '.', '_' and '-' "
                        "(at most 32, starting and ending with a letter or digit)")
    return version


def version_uri(storage: str, name: str, version: str) -> str:
    return store.join(storage, "weights", check_name(name), check_version(version))


def _natural(version: str) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", version) if part]


def names(storage: str) -> list[str]:
    return sorted(n for n in store.list_names(store.join(storage, "weights")) if NAME.fullmatch(n))


def versions(storage: str, name: str) -> list[str]:
    """Committed versions (those with SHA256SUMS), oldest to newest."""
    root = store.join(storage, "weights", check_name(name))
    found = [v for v in store.list_names(root) if VERSION.fullmatch(v) and store.exists(store.join(root, v, SUMS_FILE))]
    return sorted(found, key=_natural)


def resolve(storage: str, ref: WeightsRef) -> WeightsRef:
    """The named version, or the newest; a clear error naming what exists otherwise."""
    available = versions(storage, ref.name)
    if not available:
        known = ", ".join(names(storage)) or "none"
        raise UserError(f"no published weights named {ref.name!r} in {storage} (published: {known})")
    if ref.version is None:
        return WeightsRef(ref.name, available[-1])
    if ref.version not in available:
        raise UserError(f"{ref.name} has no version {ref.version!r} in {storage} (versions: {', '.join(available)})")
    return ref


SUMS_LINE = re.compile(r"([0-9a-f]{64})  ([A-Za-z0-9._-]+)")


def parse_sums(text: str, where: str = SUMS_FILE) -> dict[str, str]:
    """{file: sha256} from a SHA256SUMS file, each line `<64 hex digits>  <file name>` as sha256sum writes."""
    lines = [line for line in text.splitlines() if line.strip()]
    matches = [SUMS_LINE.fullmatch(line) for line in lines]
    if not lines or not all(matches):
        raise UserError(f"{where} is not a list of '<sha256>  <file>' lines; the version cannot be verified: "
                        "ask the publisher to publish it again")
    return {match[2]: match[1] for match in matches}


def show(storage: str, text: str) -> dict[str, Any]:
    ref = resolve(storage, WeightsRef.parse(text))
    raw = store.read_bytes(store.join(version_uri(storage, ref.name, ref.version), ITEM_FILE))
    return parse_item(raw.decode(errors="replace"), f"{ref}: {ITEM_FILE}")


def parse_item(text: str, where: str) -> dict[str, Any]:
    """A version's item.json, once the fields `load` relies on are there and well-formed."""
    from secoctl.model_card import FEATURES

    try:
        item = json.loads(text)
        properties = item["properties"]
        spec = properties["secoctl:input"]
        numbers = [*spec["mean"], *spec["std"], *(bound for band in spec["bands"] for bound in spec["stretch"][band])]
        well_formed = (properties["secoctl:backbone"] in FEATURES and len(spec["bands"]) == 3
                       and len(spec["mean"]) == len(spec["std"]) == 3 and len(numbers) == 12
                       and all(type(n) in (int, float) for n in numbers)
                       and (spec["size"] is None or type(spec["size"]) is int and 0 < spec["size"] <= MAX_INPUT_SIZE))
    except (ValueError, KeyError, TypeError, RecursionError):
        well_formed = False
    if not well_formed:
        raise UserError(f"{where} is not a secoctl model item (STAC JSON whose properties hold secoctl:backbone and "
                        "secoctl:input); ask the publisher to publish the version again")
    return item


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def publish(storage: str, name: str, version: str, files: dict[str, Path], force: bool = False) -> str:
    """Upload the files, then SHA256SUMS: the version exists for readers only once that lands."""
    target = version_uri(storage, name, version)
    sums_uri = store.join(target, SUMS_FILE)
    if store.exists(sums_uri):
        if not force:
            raise UserError(f"weights {name}:{version} are already published in {storage}; versions are immutable: "
                            "publish a new version, or pass --force to replace this one")
        store.remove(sums_uri)
    for filename, local in files.items():
        store.upload_file(local, store.join(target, filename))
    lines = "".join(f"{sha256_file(local)}  {filename}\n" for filename, local in sorted(files.items()))
    store.write_text(sums_uri, lines)
    return target


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "secoctl" / "weights"


def _cache_dir(storage: str, ref: WeightsRef) -> Path:
    return cache_root() / hashlib.sha256(storage.encode()).hexdigest()[:12] / ref.name / ref.version


def _download(uri: str, partial: Path, on_bytes: Callable[[int], None] | None) -> None:
    """Append what `partial` lacks of `uri`: an interrupted download resumes where it stopped."""
    fs, path = store.filesystem(uri)
    size = fs.size(path)
    have = partial.stat().st_size if partial.exists() else 0
    if have > size:
        partial.unlink()
        have = 0
    with fs.open(path, "rb", block_size=READ_CHUNK) as remote, open(partial, "ab") as local:
        remote.seek(have)
        while chunk := remote.read(READ_CHUNK):
            local.write(chunk)
            if on_bytes:
                on_bytes(len(chunk))


def verify(folder: Path, sums: dict[str, str]) -> list[str]:
    """Files whose content does not match SHA256SUMS (missing ones included)."""
    return [f for f, digest in sums.items() if not (folder / f).exists() or sha256_file(folder / f) != digest]


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """One pull per cached version at a time, across processes: the others wait, then find it cached."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _fill_cache(ref: WeightsRef, source: str, sums: dict[str, str], cached: Path,
                on_bytes: Callable[[int], None] | None) -> None:
    if cached.exists() and verify(cached, sums):
        shutil.rmtree(cached)  # the cache was altered: fetch again rather than trust it
    if cached.exists():
        return
    partial = cached.parent / f".{ref.version}.partial"
    listed = "".join(f"{d}  {f}\n" for f, d in sorted(sums.items()))
    recorded = partial / SUMS_FILE
    if recorded.exists() and recorded.read_text(errors="replace") != listed:
        shutil.rmtree(partial)  # begun for files since republished (--force): its bytes are another version's
    partial.mkdir(parents=True, exist_ok=True)
    recorded.write_text(listed)
    for filename in sums:
        _download(store.join(source, filename), partial / filename, on_bytes)
    bad = verify(partial, sums)
    if bad:
        shutil.rmtree(partial)
        raise UserError(f"{ref}: checksum mismatch for {', '.join(bad)} in {source}; the published files were "
                        "altered or truncated. Nothing was cached; ask the publisher to publish it again")
    os.replace(partial, cached)


def pull(storage: str, text: str, output: Path | None = None,
         on_bytes: Callable[[int], None] | None = None) -> tuple[WeightsRef, Path]:
    """Fetch a version into the cache (verified), copy it to `output` if given; returns the folder."""
    ref = resolve(storage, WeightsRef.parse(text))
    source = version_uri(storage, ref.name, ref.version)
    sums = parse_sums(store.read_bytes(store.join(source, SUMS_FILE)).decode(errors="replace"), f"{ref}: {SUMS_FILE}")
    unexpected = [f for f in sums if f not in (WEIGHTS_FILE, ITEM_FILE)]
    if unexpected:
        raise UserError(f"{ref}: SHA256SUMS names unexpected files {unexpected}; the version is not secoctl's layout")
    unlisted = [f for f in (WEIGHTS_FILE, ITEM_FILE) if f not in sums]
    if unlisted:
        raise UserError(f"{ref}: SHA256SUMS does not list {', '.join(unlisted)}; the version is incomplete and "
                        "cannot be verified")
    cached = _cache_dir(storage, ref)
    with _locked(cached.parent / f".{ref.version}.lock"):
        _fill_cache(ref, source, sums, cached, on_bytes)
    parse_item((cached / ITEM_FILE).read_text(errors="replace"), f"{ref}: {ITEM_FILE}")
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        for filename in (*sums, SUMS_FILE):
            shutil.copy2(cached / filename, output / filename)
    return ref, output or cached


def push(storage: str, weights_file: Path, name: str, version: str, input_size: int = 224,
         provenance: dict[str, Any] | None = None, force: bool = False) -> str:
    """Publish a safetensors backbone trained elsewhere (torchvision ResNet-18/50 key names)."""
    from secoctl.backbone_keys import architecture

    check_name(name)
    check_version(version)
    if not 1 <= input_size <= MAX_INPUT_SIZE:
        raise UserError(f"--input-size {input_size} is not between 1 and {MAX_INPUT_SIZE} pixels")
    tensors = safetensors_header(weights_file)
    try:
        backbone = architecture(tensors)
    except ValueError as error:
        raise UserError(f"{weights_file}: {error}") from None
    parameters = sum(math.prod(shape) for shape in tensors.values())
    return publish_backbone(storage, weights_file, name, version, backbone, input_size, parameters,
                            provenance or {"pushed_from": weights_file.name}, force=force)


def publish_backbone(storage: str, weights_file: Path, name: str, version: str, backbone: str, input_size: int,
                     parameters: int, provenance: dict[str, Any], metrics: dict[str, Any] | None = None,
                     force: bool = False) -> str:
    from secoctl.model_card import model_item

    item = model_item(name, version, backbone, input_size, parameters, provenance, metrics)
    with tempfile.TemporaryDirectory(prefix="secoctl-publish-") as scratch:
        item_path = Path(scratch, ITEM_FILE)
        item_path.write_text(json.dumps(item, indent=1))
        return publish(storage, name, version, {WEIGHTS_FILE: weights_file, ITEM_FILE: item_path}, force=force)


DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit


def safetensors_header(path: Path) -> dict[str, list[int]]:
    """{tensor name: shape} from a safetensors file's JSON header, checked against the file without loading it.

    Each tensor's bytes must be exactly its shape times its dtype's size, and the tensors must tile
    the data that follows the header with no gap, overlap or excess, as the format requires.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
            raise UserError(f"{path} is not a safetensors file (convert .pt/.ckpt files with `secoctl weights import`)")
        try:
            header = json.loads(handle.read(length))
        except (ValueError, RecursionError):
            raise UserError(f"{path} is not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise UserError(f"{path} is not a safetensors file: its header is not a JSON object")
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    data_bytes = size - 8 - length
    ranges = sorted((_tensor_range(path, name, entry, data_bytes), name) for name, entry in tensors.items())
    end = 0
    for (begin, stop), name in ranges:
        if begin != end:
            raise UserError(f"{path}: tensor {_shown(name)} starts at byte {begin} of the data, not {end}: "
                            "the tensors leave a gap or overlap")
        end = stop
    if end != data_bytes:
        raise UserError(f"{path}: the header describes {end} bytes of tensor data, the file holds {data_bytes}")
    return {name: entry["shape"] for name, entry in tensors.items()}


def _tensor_range(path: Path, name: str, entry: Any, data_bytes: int) -> tuple[int, int]:
    """(begin, end) of one tensor's bytes, once its dtype, shape and offsets agree with each other and the file."""
    if not isinstance(entry, dict) or entry.get("dtype") not in DTYPE_BYTES:
        raise UserError(f"{path}: tensor {_shown(name)} has no known dtype (one of {', '.join(DTYPE_BYTES)})")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise UserError(f"{path}: tensor {_shown(name)} has shape {_shown(shape)}, not a list of sizes")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets) \
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes:
        raise UserError(f"{path}: tensor {_shown(name)} has data_offsets {_shown(offsets)}, "
                        f"not [begin, end] within the file's {data_bytes} bytes of tensor data")
    needed = math.prod(shape) * DTYPE_BYTES[entry["dtype"]]
    if needed != offsets[1] - offsets[0]:
        # an absurd shape's byte count can be too long to print
        needs = f"{needed} bytes" if needed <= data_bytes else f"more than the file's {data_bytes} bytes"
        raise UserError(f"{path}: tensor {_shown(name)} of shape {_shown(shape)} and dtype {entry['dtype']} "
                        f"needs {needs}, its data_offsets hold {offsets[1] - offsets[0]}")
    return offsets[0], offsets[1]


def _shown(value: Any, limit: int = 60) -> str:
    """A header value for an error line: a hostile header must not make a megabyte of message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def input_transform(item: dict[str, Any]):
    """The callable that turns (…, 3, H, W) reflectance × 10000 (B04, B03, B02) into the model's input."""
    from jobs.common.backbone import ReflectanceInput

    spec = item["properties"]["secoctl:input"]
    return ReflectanceInput([spec["stretch"][b] for b in spec["bands"]], spec["mean"], spec["std"], spec["size"])


def load(text: str, storage: str | None = None):
    """(torchvision ResNet backbone with the published weights, its input transform)."""
    from jobs.common.backbone import build_backbone

    storage = store.storage(storage)
    ref, folder = pull(storage, text)
    item = parse_item((folder / ITEM_FILE).read_text(errors="replace"), f"{ref}: {ITEM_FILE}")
    model = build_backbone(item["properties"]["secoctl:backbone"], folder / WEIGHTS_FILE)
    return model, input_transform(item)


IMPORT_FORMATS = ("seco-ckpt", "torchgeo")


def import_checkpoint(storage: str, path: Path, fmt: str, name: str, version: str, input_size: int = 224,
                      force: bool = False, releases: dict[str, Any] | None = None) -> str:
    """Convert the reference's Lightning checkpoints or torchgeo's SeCo weights, without unpickling code.

    A seco-ckpt file must be one of the reference's releases by its MD5 sum (`releases` replaces that
    table only in tests); the release's name and pre-training set go into the published provenance.
    """
    import argparse

    import torch
    from safetensors.torch import save_file

    from jobs.common.backbone import build_backbone
    from secoctl.backbone_keys import architecture, from_encoder_q, from_torchvision_like

    check_name(name)
    check_version(version)
    if fmt not in IMPORT_FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(IMPORT_FORMATS)}")
    provenance: dict[str, Any] = {"imported_from": path.name, "format": fmt}
    release = None
    if fmt == "seco-ckpt":
        from secoctl import seco_releases

        release, md5 = seco_releases.identify(path, seco_releases.RELEASES if releases is None else releases)
        provenance.update({"release": release.name, "md5": md5, "pretraining": release.pretraining})
    try:
        # Lightning stores its hyper-parameters as an argparse.Namespace: a plain attribute bag.
        with torch.serialization.safe_globals([argparse.Namespace]):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means the file is not safely loadable
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} cannot be loaded as plain tensors (torch.load weights_only=True): {first}") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else {}
    renamed = from_encoder_q(state) if fmt == "seco-ckpt" else from_torchvision_like(state)
    if not renamed:
        expected = "encoder_q.<i>.* keys (SeCo Lightning checkpoint)" if fmt == "seco-ckpt" else \
            "conv1/bn1/layer1-4 keys (torchgeo/timm ResNet)"
        raise UserError(f"{path} has no {expected}; is --format right?")
    tensors = {new: state[old].contiguous() for new, old in renamed.items()}
    try:
        backbone = architecture(tensors)
        build_backbone(backbone).load_state_dict(tensors, strict=True)
    except (ValueError, RuntimeError) as error:
        raise UserError(f"{path}: {str(error).splitlines()[0]}") from None
    if release is not None and release.backbone != backbone:
        raise UserError(f"{path.name} has the md5 of {release.name} but holds a {backbone}")
    with tempfile.TemporaryDirectory(prefix="secoctl-import-") as scratch:
        converted = Path(scratch, WEIGHTS_FILE)
        save_file(tensors, str(converted))
        return publish_backbone(storage, converted, name, version, backbone, input_size,
                                sum(t.numel() for t in tensors.values()),
                                provenance, force=force)
