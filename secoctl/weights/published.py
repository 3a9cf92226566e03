"""Published weights: `<storage>/weights/<name>/<version>/{model.safetensors, item.json, SHA256SUMS}`.

A version is committed by its SHA256SUMS, written last, and never changes afterwards (a re-publish
needs force). Pulls land in a local cache only once every checksum matches; an interrupted pull
resumes from the bytes it has, and concurrent pulls of one version take turns (a file lock). The
one name rule (`NAME`) serves publish, pull and the spec's `publish.name` alike. No torch here.
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
from secoctl.cache import cache_root
from secoctl.errors import MAX_VALUE_CHARS, UserError, shorten, shown
from secoctl.model_card import BAND_TABLE, KNOWN_BANDS, RGB_BANDS
from secoctl.weights.header import parameter_count, safetensors_header

WEIGHTS_FILE = "model.safetensors"
IMPORT_FORMATS = ("seco-ckpt", "torchgeo")
EXPORT_FORMATS = ("timm", "torchgeo", "hf")
ITEM_FILE = "item.json"
SUMS_FILE = "SHA256SUMS"
NAME = re.compile(r"[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?")
VERSION = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,30}[A-Za-z0-9])?")
READ_CHUNK = 4 * 2**20
MAX_INPUT_SIZE = 8192  # pixels per side of a model's input: a published item claiming more is not a model card
MAX_INPUT_BANDS = 64  # input bands of a model: Sentinel-2 has 13, a hyperspectral sensor a few hundred at most


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
        raise UserError(
            f"weights name {shown(name)} is invalid: use lower-case letters, digits, '.', '_' and '-' "
            "(at most 64, starting and ending with a letter or digit)"
        )
    return name


def check_version(version: str) -> str:
    if not VERSION.fullmatch(version) or ".." in version:
        raise UserError(
            f"weights version {shown(version)} is invalid: use letters, digits, '.', '_' and '-' "
            "(at most 32, starting and ending with a letter or digit)"
        )
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
        raise UserError(f"no published weights named {shown(ref.name)} in {storage} (published: {known})")
    if ref.version is None:
        return WeightsRef(ref.name, available[-1])
    if ref.version not in available:
        raise UserError(
            f"{ref.name} has no version {shown(ref.version)} in {storage} (versions: {', '.join(available)})"
        )
    return ref


SUMS_LINE = re.compile(r"([0-9a-f]{64})  ([A-Za-z0-9._-]+)")


def parse_sums(text: str, where: str = SUMS_FILE) -> dict[str, str]:
    """{file: sha256} from a SHA256SUMS file, each line `<64 hex digits>  <file name>` as sha256sum writes."""
    lines = [line for line in text.splitlines() if line.strip()]
    matches = [SUMS_LINE.fullmatch(line) for line in lines]
    if not lines or not all(matches):
        raise UserError(
            f"{where} is not a list of '<sha256>  <file>' lines; the version cannot be verified: "
            "ask the publisher to publish it again"
        )
    return {match[2]: match[1] for match in matches}


def show(storage: str, text: str) -> dict[str, Any]:
    ref = resolve(storage, WeightsRef.parse(text))
    raw = store.read_bytes(store.join(version_uri(storage, ref.name, ref.version), ITEM_FILE))
    return parse_item(raw.decode(errors="replace"), f"{ref}: {ITEM_FILE}")


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _well_formed_input(spec: dict[str, Any]) -> bool:
    """Known, distinct bands (Sentinel-2's, or Landsat OLI's in weights adapted to them), each with a finite
    stretch low < high and a finite mean and positive std."""
    bands = spec["bands"]
    return (
        type(bands) is list
        and 1 <= len(bands) <= MAX_INPUT_BANDS
        and all(band in BAND_TABLE for band in bands)
        and len(set(bands)) == len(bands)
        and type(spec["mean"]) is list
        and type(spec["std"]) is list
        and len(spec["mean"]) == len(spec["std"]) == len(bands)
        and all(_finite(n) for n in [*spec["mean"], *spec["std"]])
        and all(n > 0 for n in spec["std"])
        and all(
            type(spec["stretch"][band]) is list
            and len(spec["stretch"][band]) == 2
            and all(_finite(n) for n in spec["stretch"][band])
            and spec["stretch"][band][0] < spec["stretch"][band][1]
            for band in bands
        )
        and (spec["size"] is None or type(spec["size"]) is int and 0 < spec["size"] <= MAX_INPUT_SIZE)
    )


def parse_item(text: str, where: str) -> dict[str, Any]:
    """A version's item.json, once the fields `load` relies on are there and well-formed."""
    from secoctl.model_card import FEATURES

    try:
        item = json.loads(text)
        properties = item["properties"]
        well_formed = properties["secoctl:backbone"] in FEATURES and _well_formed_input(properties["secoctl:input"])
    except (ValueError, KeyError, TypeError, RecursionError):
        well_formed = False
    if not well_formed:
        raise UserError(
            f"{where} is not a secoctl model item (STAC JSON whose properties hold secoctl:backbone and "
            "secoctl:input: known, distinct bands, each with its stretch, mean and std); ask the "
            "publisher to publish the version again"
        )
    return item


def parse_bands(text: str) -> tuple[str, ...]:
    """`--bands B04,B03,B02`: Sentinel-2 L2A band names in the stem's channel order, each once."""
    quoted = shown(text)  # bounded: the option may be of any length
    bands = tuple(band.strip() for band in text.split(",", MAX_INPUT_BANDS))
    if "" in bands:
        raise UserError(
            f"--bands {quoted}: an empty band name (nothing given, or two commas in a row); give "
            f"comma-separated names of {', '.join(KNOWN_BANDS)}"
        )
    if len(bands) > MAX_INPUT_BANDS:
        raise UserError(
            f"--bands {quoted}: more than {MAX_INPUT_BANDS} bands; weights carry at most "
            f"{MAX_INPUT_BANDS}, one per input channel"
        )
    unknown = [band for band in bands if band not in KNOWN_BANDS]
    if unknown:
        raise UserError(
            f"--bands {quoted}: {', '.join(shorten(band, MAX_VALUE_CHARS) for band in unknown[:3])} is not a band "
            f"weights can carry; give comma-separated names of {', '.join(KNOWN_BANDS)}"
        )
    if len(set(bands)) != len(bands):
        raise UserError(f"--bands {quoted} names a band twice; give each band once, in the stem's channel order")
    return bands


def input_bands(conv1_shape: list[int], bands: tuple[str, ...] | None) -> tuple[str, ...]:
    """The bands a backbone reads: those given, or the paper's RGB; refused when conv1 takes another number."""
    if len(conv1_shape) != 4:
        raise UserError(f"conv1.weight has shape {conv1_shape}, not a 2-d convolution's (out, in, h, w)")
    chosen = RGB_BANDS if bands is None else bands
    if len(chosen) != conv1_shape[1]:
        fix = "name them in the stem's order with --bands" if bands is None else "list that many with --bands"
        raise UserError(
            f"conv1.weight takes {conv1_shape[1]} input channels but the bands are "
            f"{', '.join(chosen)} ({len(chosen)}); {fix} (e.g. --bands {','.join(KNOWN_BANDS)})"
        )
    return chosen


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def taken_by_another(storage: str, name: str, version: str, experiment: str) -> str | None:
    """The experiment (or push) that published NAME:VERSION when it is not `experiment`: a spec that would
    publish over it fails at its last stage unless told to replace it, so apply and validate say so first."""
    if version not in versions(storage, name):
        return None
    item = read_json_or_none(store.join(version_uri(storage, name, version), ITEM_FILE)) or {}
    provenance = (item.get("properties") or {}).get("secoctl:provenance") or {}
    owner = provenance.get("experiment")
    return None if owner == experiment else str(owner or "a push or an import")


def read_json_or_none(uri: str) -> Any:
    try:
        return store.read_json_or_none(uri)
    except ValueError:
        return None


def publish(storage: str, name: str, version: str, files: dict[str, Path], force: bool = False) -> str:
    """Upload the files, then SHA256SUMS: the version exists for readers only once that lands."""
    target = version_uri(storage, name, version)
    sums_uri = store.join(target, SUMS_FILE)
    if store.exists(sums_uri):
        if not force:
            raise UserError(
                f"weights {name}:{version} are already published in {storage}; versions are immutable: "
                "publish a new version, or replace this one (`--force`; in a spec, spec.publish.force: true)"
            )
        store.remove(sums_uri)
    for filename, local in files.items():
        store.upload_file(local, store.join(target, filename))
    lines = "".join(f"{sha256_file(local)}  {filename}\n" for filename, local in sorted(files.items()))
    store.write_text(sums_uri, lines)
    return target


def weights_cache() -> Path:
    return cache_root("weights")


def _cache_dir(storage: str, ref: WeightsRef) -> Path:
    return weights_cache() / hashlib.sha256(storage.encode()).hexdigest()[:12] / ref.name / ref.version


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


def _fill_cache(
    ref: WeightsRef, source: str, sums: dict[str, str], cached: Path, on_bytes: Callable[[int], None] | None
) -> None:
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
        raise UserError(
            f"{ref}: checksum mismatch for {', '.join(bad)} in {source}; the published files were "
            "altered or truncated. Nothing was cached; ask the publisher to publish it again"
        )
    os.replace(partial, cached)


def pull(
    storage: str, text: str, output: Path | None = None, on_bytes: Callable[[int], None] | None = None
) -> tuple[WeightsRef, Path]:
    """Fetch a version into the cache (verified), copy it to `output` if given; returns the folder."""
    ref = resolve(storage, WeightsRef.parse(text))
    source = version_uri(storage, ref.name, ref.version)
    sums = parse_sums(store.read_bytes(store.join(source, SUMS_FILE)).decode(errors="replace"), f"{ref}: {SUMS_FILE}")
    unexpected = [f for f in sums if f not in (WEIGHTS_FILE, ITEM_FILE)]
    if unexpected:
        raise UserError(f"{ref}: SHA256SUMS names unexpected files {unexpected}; the version is not secoctl's layout")
    unlisted = [f for f in (WEIGHTS_FILE, ITEM_FILE) if f not in sums]
    if unlisted:
        raise UserError(
            f"{ref}: SHA256SUMS does not list {', '.join(unlisted)}; the version is incomplete and cannot be verified"
        )
    cached = _cache_dir(storage, ref)
    with _locked(cached.parent / f".{ref.version}.lock"):
        _fill_cache(ref, source, sums, cached, on_bytes)
    parse_item((cached / ITEM_FILE).read_text(errors="replace"), f"{ref}: {ITEM_FILE}")
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        for filename in (*sums, SUMS_FILE):
            shutil.copy2(cached / filename, output / filename)
    return ref, output or cached


def push(
    storage: str,
    weights_file: Path,
    name: str,
    version: str,
    input_size: int = 224,
    provenance: dict[str, Any] | None = None,
    force: bool = False,
    bands: tuple[str, ...] | None = None,
) -> str:
    """Publish a safetensors backbone trained elsewhere (torchvision ResNet-18/50 key names) over `bands` (the
    paper's RGB when None), which must be as many as its conv1's input channels."""
    from secoctl.weights.backbone_keys import architecture

    check_name(name)
    check_version(version)
    if not 1 <= input_size <= MAX_INPUT_SIZE:
        raise UserError(f"--input-size {input_size} is not between 1 and {MAX_INPUT_SIZE} pixels")
    tensors = safetensors_header(weights_file)
    try:
        backbone = architecture(tensors)
    except ValueError as error:
        raise UserError(f"{weights_file}: {error}") from None
    parameters = parameter_count(tensors)
    return publish_backbone(
        storage,
        weights_file,
        name,
        version,
        backbone,
        input_size,
        parameters,
        provenance or {"pushed_from": weights_file.name},
        force=force,
        bands=bands,
    )


def publish_backbone(
    storage: str,
    weights_file: Path,
    name: str,
    version: str,
    backbone: str,
    input_size: int,
    parameters: int,
    provenance: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    force: bool = False,
    bands: tuple[str, ...] | list[str] | None = None,
) -> str:
    """`bands`: the input bands in the stem's channel order (the paper's RGB when None), as many as conv1 takes:
    checked here, the one path every publish takes."""
    from secoctl.model_card import model_item

    conv1 = safetensors_header(weights_file).get("conv1.weight")
    if conv1 is None:
        raise UserError(f"{weights_file}: no conv1.weight; these weights are not a torchvision ResNet backbone")
    bands = input_bands(conv1, None if bands is None else tuple(bands))
    item = model_item(name, version, backbone, input_size, parameters, provenance, metrics, bands)
    with tempfile.TemporaryDirectory(prefix="secoctl-publish-") as scratch:
        item_path = Path(scratch, ITEM_FILE)
        item_path.write_text(json.dumps(item, indent=1))
        return publish(storage, name, version, {WEIGHTS_FILE: weights_file, ITEM_FILE: item_path}, force=force)
