"""The real Kubernetes components the cluster tests run, built from source with the Go tool.

`gobuild/kubernetes` requires k8s.io/kubernetes at a pinned release and maps every staging module
to its published twin; `gobuild/etcd` pins the etcd server that release pairs with; kwok is
`go install`ed at its tag. Binaries are cached under ~/.cache/secoctl/cluster/<key>, the key being
the versions and the build modules' contents, so a second run starts in seconds. A failed build
raises: the cluster tests fail loudly rather than skip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

KUBERNETES = "v1.36.3"
ETCD = "v3.6.8"
KWOK = "v0.8.0"
GOBUILD = Path(__file__).parent / "gobuild"
KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
# kwok's own stage definitions for node and pod life cycles, copied beside the binary. Nodes heartbeat
# through Leases; the plain node-heartbeat stage rewrites node status without its addresses, which
# breaks the apiserver's way to a node's logs.
KWOK_STAGES = ("node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml", "pod/fast/pod-ready.yaml",
               "pod/fast/pod-delete.yaml", "pod/chaos/pod-container-running-failed.yaml")
ALL = (*KUBERNETES_COMMANDS, "etcd", "kwok")


def cache_key() -> str:
    digest = hashlib.sha256()
    for path in sorted(GOBUILD.rglob("go.*")):
        digest.update(path.read_bytes())
    return f"k8s-{KUBERNETES}-etcd-{ETCD}-kwok-{KWOK}-{digest.hexdigest()[:12]}"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "secoctl" / "cluster" / cache_key()


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    print(f"cluster: go {' '.join(args[:2])} ... (in {cwd.name})", file=sys.stderr, flush=True)
    result = subprocess.run(["go", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the cluster binaries failed: go {' '.join(args)} in {cwd}:\n"
                           + "\n".join(result.stdout.splitlines()[-40:]))


def _gomodcache(env: dict[str, str]) -> Path:
    return Path(subprocess.run(["go", "env", "GOMODCACHE"], env=env, capture_output=True, text=True,
                               check=True).stdout.strip())


def build(target: Path) -> None:
    if shutil.which("go") is None:
        raise RuntimeError("the cluster tests build Kubernetes from source and need the Go tool on PATH")
    staging = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", "GOBIN": str(staging)}
    flags = ["-trimpath", "-ldflags=-s -w"]
    _go(["build", *flags, "-o", f"{staging}/", *(f"k8s.io/kubernetes/cmd/{c}" for c in KUBERNETES_COMMANDS)],
        GOBUILD / "kubernetes", env)
    _go(["build", *flags, "-o", str(staging / "etcd"), "go.etcd.io/etcd/server/v3"], GOBUILD / "etcd", env)
    _go(["install", *flags, f"sigs.k8s.io/kwok/cmd/kwok@{KWOK}"], GOBUILD, env)
    copy_stages(staging, env)
    staging.rename(target)


def copy_stages(target: Path, env: dict[str, str]) -> None:
    """kwok's stage YAMLs, from its module in the Go module cache, as `target/stages/*.yaml`."""
    _go(["mod", "download", f"sigs.k8s.io/kwok@{KWOK}"], GOBUILD, env)
    stages = _gomodcache(env) / f"sigs.k8s.io/kwok@{KWOK}" / "kustomize" / "stage"
    if (target / "stages").exists():
        shutil.rmtree(target / "stages")
    (target / "stages").mkdir()
    for relative in KWOK_STAGES:
        shutil.copy(stages / relative, target / "stages" / Path(relative).name)


def ensure() -> Path:
    """The directory holding every binary, built first if the cache lacks it."""
    target = cache_dir()
    if all((target / name).is_file() for name in ALL):
        if {p.name for p in (target / "stages").glob("*.yaml")} != {Path(s).name for s in KWOK_STAGES}:
            copy_stages(target, {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"})
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    build(target)
    return target


if __name__ == "__main__":
    print(ensure())
