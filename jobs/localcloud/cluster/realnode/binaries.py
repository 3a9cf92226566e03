"""The node's own components, built from source like the control plane's: kubelet, kube-proxy, CoreDNS, pause.

kubelet and kube-proxy come from k8s.io/kubernetes at the control plane's release, in `gobuild/`, a
module of their own (copied to a staging folder to build, so go.sum in the repository never
changes under a build); CoreDNS is `go install`ed at its tag; the sandbox image's `pause` is
`pause.go`, packed as a one-layer OCI image. The container runtime (containerd, runc) and the CNI
plugins are Debian's packages (`apt-get install containerd runc containernetworking-plugins`).
Cached under ~/.cache/secoctl/realnode/<key>; `python -m jobs.localcloud.cluster build` builds it with the rest.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import time
from pathlib import Path

from jobs.localcloud.cluster import binaries
from secoctl.cache import cache_root

HERE = Path(__file__).parent
COREDNS = "v1.15.0"
PAUSE_IMAGE = "localhost/pause:3.10"  # containerd.toml's sandbox_image
NODE_COMMANDS = ("kubelet", "kube-proxy")
ALL = (*NODE_COMMANDS, "coredns", "pause", "pause-image.tar")
# Debian packages the node runs; checked before a start, installed by .ci/run.
HOST_PACKAGES = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "ip": "iproute2",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
}


def cache_key() -> str:
    digest = binaries.build_digest([*(HERE / "gobuild").glob("go.*"), HERE / "pause.go"])
    return f"k8s-{binaries.KUBERNETES}-coredns-{COREDNS}-{digest}"


def cache_dir() -> Path:
    return cache_root("realnode", cache_key())


def _complete(target: Path) -> bool:
    return all((target / name).is_file() for name in ALL)


def missing_packages() -> list[str]:
    """The Debian packages the node needs that this machine lacks."""
    return sorted(
        {
            package
            for tool, package in HOST_PACKAGES.items()
            if not (Path(tool).exists() if tool.startswith("/") else shutil.which(tool))
        }
    )


def pause_image(pause: Path, tarball: Path) -> None:
    """`pause` as a one-layer OCI image layout in a tar, what `ctr images import` reads."""
    blobs: dict[str, bytes] = {}

    def blob(content: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(content).hexdigest()
        blobs[digest] = content
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(content)}

    layer_bytes = io.BytesIO()
    with tarfile.open(fileobj=layer_bytes, mode="w", format=tarfile.PAX_FORMAT) as layer:
        info = layer.gettarinfo(str(pause), arcname="pause")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755
        with open(pause, "rb") as handle:
            layer.addfile(info, handle)
    layer_descriptor = blob(layer_bytes.getvalue(), "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [layer_descriptor["digest"]]},
    }
    config_descriptor = blob(json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": [layer_descriptor],
    }
    manifest_descriptor = blob(
        json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json"
    )
    manifest_descriptor["annotations"] = {"org.opencontainers.image.ref.name": PAUSE_IMAGE.rsplit(":", 1)[1]}
    index = {"schemaVersion": 2, "manifests": [manifest_descriptor]}
    with tarfile.open(tarball, "w") as out:
        for name, content in [
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index).encode()),
            *((f"blobs/sha256/{d}", c) for d, c in blobs.items()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            out.addfile(info, io.BytesIO(content))


def steps(staging: Path, module: Path) -> list[tuple[str, list[str], Path]]:
    """(component, go arguments, folder): kubelet and kube-proxy from `module`, a copy of gobuild/."""
    flags = binaries.GO_FLAGS
    return [
        *(
            (command, ["build", *flags, "-o", str(staging / command), f"k8s.io/kubernetes/cmd/{command}"], module)
            for command in NODE_COMMANDS
        ),
        ("coredns", ["install", *flags, f"github.com/coredns/coredns@{COREDNS}"], staging),
        ("pause", ["build", *flags, "-o", str(staging / "pause"), str(HERE / "pause.go")], HERE),
    ]


def build(target: Path, log=print) -> None:
    """Every node component into a staging folder, renamed to `target` only when all were built."""
    started = time.monotonic()
    with binaries.staged(target) as staging:
        env = binaries._environment(staging)
        module = staging / "module"
        module.mkdir()
        for name in ("go.mod", "go.sum"):
            shutil.copy(HERE / "gobuild" / name, module / name)
        binaries.run_steps(steps(staging, module), env, "node binaries", log)
        if (module / "go.sum").read_bytes() != (HERE / "gobuild" / "go.sum").read_bytes():
            shutil.copy(module / "go.sum", staging / "go.sum.built")
            log(
                f"node binaries: note: the build added lines to go.sum; {target / 'go.sum.built'} holds them "
                f"for {HERE / 'gobuild'}"
            )
        shutil.rmtree(module)
        pause_image(staging / "pause", staging / "pause-image.tar")
    log(f"node binaries: all built in {time.monotonic() - started:.0f} s into {target}")


def ensure(log=print) -> Path:
    target = cache_dir()
    if _complete(target):
        log(f"node binaries: cached in {target}")
        return target
    build(target, log)
    return target


def cached() -> Path:
    """The cached node binaries, for the tests: never builds."""
    target = cache_dir()
    return binaries.required(target, _complete(target), "the node binaries are")
