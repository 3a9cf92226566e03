"""`python -m images.build`: the pod image as an OCI image layout, built here without a registry.

`images/secoctl/Dockerfile` is the way to build the image with a registry at hand. This builds the
same file system and user from Debian packages alone, for machines (and CI) that reach no registry:

1. debootstrap a minimal bookworm with python3.11; the downloaded packages are cached as a tarball
   keyed by the suite and the package list;
2. in a chroot, `uv venv /opt/secoctl` and `uv pip install --offline` images/secoctl/requirements.lock
   from this machine's uv cache, with bytecode compiled, as the Dockerfile does: the layer of the
   dependencies, cached keyed by the lock's hash (torch makes it several GB);
3. on an overlay of that, `uv pip install --no-deps` this repository's package: a small layer keyed
   by the package's sources;
4. both layers, uncompressed, with a config that runs as 65532:65532 with HOME=/tmp, in one OCI image
   layout under ~/.cache/secoctl/images/layout, tagged `secoctl:<lock key>-<source key>`.

It needs root (debootstrap, chroot, mounts), debootstrap and GNU tar, and no network once the
package tarball and the uv cache hold what the lock names.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from secoctl.cache import cache_root as secoctl_cache

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "images" / "secoctl" / "requirements.lock"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3.11", "ca-certificates")
VENV = "/opt/secoctl"
USER = "65532:65532"  # render.RUN_AS_USER: no passwd entry, as in the Dockerfile
ENV = [
    f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONUNBUFFERED=1",
    "HOME=/tmp",
]
SOURCES = ("pyproject.toml", "README.md", "secoctl", "jobs")  # what the Dockerfile copies into /src
# Left out of the dependencies layer: package caches and logs of the build, nothing the pods read.
TRIMMED = ("var/cache/apt", "var/lib/apt/lists", "var/cache/debconf/templates.dat-old", "var/log")
BUILD_VERSION = "2"  # bump when this recipe changes what a cached layer holds
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"


class BuildFailed(RuntimeError):
    """A build command failed; the message ends with its last lines."""


@dataclass(frozen=True)
class Image:
    layout: Path  # an OCI image layout
    tag: str  # org.opencontainers.image.ref.name in the layout's index
    manifest_digest: str

    @property
    def reference(self) -> str:
        """What `umoci`/`skopeo` call it: oci:<layout>:<tag>."""
        return f"oci:{self.layout}:{self.tag}"


def cache_root() -> Path:
    return secoctl_cache("images")


def _short(digest: hashlib._Hash) -> str:
    return digest.hexdigest()[:12]


def base_key() -> str:
    return _short(hashlib.sha256("\n".join([SUITE, MIRROR, *PACKAGES]).encode()))


def dependencies_key() -> str:
    digest = hashlib.sha256(f"{BUILD_VERSION}\n{base_key()}\n".encode())
    digest.update(LOCK.read_bytes())
    return _short(digest)


def _source_files() -> list[Path]:
    files = []
    for name in SOURCES:
        path = ROOT / name
        files.extend(
            sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            if path.is_dir()
            else [path]
        )
    return files


def source_key() -> str:
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(f"{path.relative_to(ROOT)}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return _short(digest)


def tag() -> str:
    return f"secoctl:{dependencies_key()}-{source_key()}"


def _run(argv: list[str], **kwargs) -> None:
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
    )
    if result.returncode != 0:
        raise BuildFailed(
            f"{' '.join(argv[:6])} ... exited {result.returncode}:\n" + "\n".join(result.stdout.splitlines()[-30:])
        )


def _nice(argv: list[str]) -> list[str]:
    return ["nice", "-n", "10", *argv]


def _uv() -> Path:
    """The uv this repository's virtual environment pins (Makefile's UV_VERSION)."""
    uv = Path(sys.executable).parent / "uv"
    if not uv.is_file():
        raise BuildFailed(f"{uv} is missing: run `make .venv/.installed` first")
    return uv


def _uv_cache() -> Path:
    return Path(subprocess.run([str(_uv()), "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip())


def base_tarball(log) -> Path:
    """The Debian packages debootstrap installs, downloaded once per suite and package list."""
    tarball = cache_root() / f"debootstrap-{SUITE}-{base_key()}.tgz"
    if tarball.is_file():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=tarball.parent) as scratch:
        partial = Path(scratch) / tarball.name
        _run(
            _nice(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    f"--make-tarball={partial}",
                    SUITE,
                    str(Path(scratch) / "target"),
                    MIRROR,
                ]
            )
        )
        partial.rename(tarball)
    log(f"image: downloaded {SUITE} packages in {time.monotonic() - started:.0f} s into {tarball}")
    return tarball


def _chroot(rootfs: Path, script: str, files: dict[str, Path]) -> None:
    """Run `script` (sh) as root in `rootfs`, with `files` copied into a private /tmp and the uv cache at /mnt.

    A mount namespace of its own keeps /proc, /tmp and the cache mounts out of the host and out of
    the layer: the file system is left holding only what the script wrote.
    """
    with tempfile.TemporaryDirectory() as scratch:
        for name, source in files.items():
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, Path(scratch) / name)
        setup = (
            f"mount -t proc proc {rootfs}/proc && mount --bind {scratch} {rootfs}/tmp && "
            f"mount --bind {_uv_cache()} {rootfs}/mnt && exec chroot {rootfs} "
            "env -i PATH=/usr/bin:/bin HOME=/tmp UV_CACHE_DIR=/mnt UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 "
            'UV_PYTHON_DOWNLOADS=never UV_NO_CONFIG=1 sh -euc "$0"'
        )
        _run(_nice(["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, script]))


def _layer(source: Path, blobs: Path) -> dict:
    """`source`'s tree as an uncompressed tar layer in `blobs`: its descriptor (digest is also the diff id)."""
    blobs.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=blobs, delete=False) as partial:
        tar = subprocess.Popen(
            [
                "nice",
                "-n",
                "10",
                "tar",
                "--create",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-exclude=trusted.*",
                "--sort=name",
                "--directory",
                str(source),
                ".",
            ],
            stdout=subprocess.PIPE,
        )
        digest, size = hashlib.sha256(), 0
        while chunk := tar.stdout.read(1 << 20):
            digest.update(chunk)
            partial.write(chunk)
            size += len(chunk)
        if tar.wait() != 0:
            os.unlink(partial.name)
            raise BuildFailed(f"tar of {source} exited {tar.returncode}")
    os.chmod(partial.name, 0o644)
    os.replace(partial.name, blobs / digest.hexdigest())
    return {"mediaType": LAYER_MEDIA_TYPE, "digest": f"sha256:{digest.hexdigest()}", "size": size}


def dependencies_layer(layout: Path, log) -> tuple[dict, Path]:
    """The base system and the locked dependencies: (layer descriptor, its unpacked tree, kept to build on)."""
    key = dependencies_key()
    record, rootfs = cache_root() / f"dependencies-{key}.json", cache_root() / f"dependencies-{key}"
    if record.is_file() and rootfs.is_dir():
        descriptor = json.loads(record.read_text())
        if (layout / "blobs" / "sha256" / descriptor["digest"].removeprefix("sha256:")).is_file():
            return descriptor, rootfs
        return _layer(rootfs, layout / "blobs" / "sha256"), rootfs
    tarball = base_tarball(log)
    started = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_root()))
    staging.chmod(0o755)  # the image's "/", which the pods' user must be able to enter
    try:
        _run(
            _nice(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    f"--unpack-tarball={tarball}",
                    SUITE,
                    str(staging),
                    MIRROR,
                ]
            )
        )
        log(f"image: {SUITE} base installed in {time.monotonic() - started:.0f} s")
        for trimmed in TRIMMED:
            path = staging / trimmed
            if path.is_dir():
                for child in path.iterdir():
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            elif path.exists():
                path.unlink()
        _chroot(
            staging,
            f"/tmp/uv venv {VENV} --python /usr/bin/python3.11 && "
            f"/tmp/uv pip install --offline --python {VENV}/bin/python -r /tmp/requirements.lock",
            {"uv": _uv(), "requirements.lock": LOCK},
        )
        log(f"image: dependencies installed in {time.monotonic() - started:.0f} s")
        descriptor = _layer(staging, layout / "blobs" / "sha256")
        log(f"image: dependencies layer ({descriptor['size'] / 1e9:.1f} GB) in {time.monotonic() - started:.0f} s")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for old in cache_root().glob("dependencies-*"):  # one lock at a time: each is several GB
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    staging.rename(rootfs)
    record.write_text(json.dumps(descriptor))
    return descriptor, rootfs


def package_layer(dependencies: Path, layout: Path) -> dict:
    """This repository's package installed over the dependencies: only the files it adds."""
    with tempfile.TemporaryDirectory(dir=cache_root()) as scratch:
        upper, work, merged = (Path(scratch) / name for name in ("upper", "work", "merged"))
        for folder in (upper, work, merged):
            folder.mkdir()
        source = Path(scratch) / "src"
        source.mkdir()
        for name in SOURCES:
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(
                ROOT / name,
                source / name,
                **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir() else {}),
            )
        _run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={dependencies},upperdir={upper},workdir={work}",
                str(merged),
            ]
        )
        try:
            _chroot(
                merged,
                f"/tmp/uv pip install --offline --no-deps --python {VENV}/bin/python /tmp/src",
                {"uv": _uv(), "src": source},
            )
        finally:
            _run(["umount", str(merged)])
        whiteouts = [p for p in upper.rglob("*") if p.is_char_device()]
        if whiteouts:  # a deletion would need an OCI whiteout entry; installing a package deletes nothing
            raise BuildFailed(f"installing the package removed files of the dependencies: {whiteouts[:5]}")
        return _layer(upper, layout / "blobs" / "sha256")


def _blob(layout: Path, content: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(content).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(content)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(content)}


def _write_image(layout: Path, image_tag: str, layers: list[dict]) -> str:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"User": USER, "Env": ENV, "WorkingDir": "/tmp", "Cmd": ["secoctl", "--help"]},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},  # uncompressed
    }
    config_descriptor = _blob(
        layout, json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json"
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": layers,
    }
    manifest_descriptor = _blob(
        layout, json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json"
    )
    manifest_descriptor["annotations"] = {"org.opencontainers.image.ref.name": image_tag.split(":", 1)[1]}
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    # One image per layout: older tags' blobs go, so the cache holds one dependencies layer.
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_descriptor]}))
    kept = {config_descriptor["digest"], manifest_descriptor["digest"], *(layer["digest"] for layer in layers)}
    for blob in (layout / "blobs" / "sha256").iterdir():
        if f"sha256:{blob.name}" not in kept:
            blob.unlink()
    return manifest_descriptor["digest"]


def built() -> Image | None:
    """The image for the current lock and sources, if the layout holds it."""
    layout = cache_root() / "layout"
    try:
        index = json.loads((layout / "index.json").read_text())
    except FileNotFoundError:
        return None
    wanted = tag().split(":", 1)[1]
    for manifest in index["manifests"]:
        if manifest.get("annotations", {}).get("org.opencontainers.image.ref.name") == wanted:
            return Image(layout, wanted, manifest["digest"])
    return None


def build(log=print) -> Image:
    """The image for the current lock and sources, built (only the layers whose key changed) if need be."""
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        raise BuildFailed(
            "the image build runs debootstrap and chroot: run it as root with debootstrap "
            "installed (apt-get install debootstrap)"
        )
    existing = built()
    if existing:
        log(f"image: cached {existing.reference}")
        return existing
    started = time.monotonic()
    image_tag = tag()  # before the sources are copied: a file saved during the build makes the next build
    layout = cache_root() / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    dependencies, rootfs = dependencies_layer(layout, log)
    package = package_layer(rootfs, layout)
    digest = _write_image(layout, image_tag, [dependencies, package])
    image = Image(layout, image_tag.split(":", 1)[1], digest)
    log(f"image: {image.reference} built in {time.monotonic() - started:.0f} s")
    return image


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m images.build", description=__doc__.split("\n")[0])
    parser.parse_args()
    try:
        image = build(lambda line: print(line, file=sys.stderr, flush=True))
    except BuildFailed as error:
        print(f"image: build failed: {error}", file=sys.stderr)
        return 1
    print(image.reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
