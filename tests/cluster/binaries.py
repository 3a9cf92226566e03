"""The real Kubernetes components the cluster tests run, built from source with the Go tool.

`gobuild/kubernetes` requires k8s.io/kubernetes at a pinned release and maps every staging module
to its published twin; `gobuild/etcd` pins the etcd server that release pairs with; kwok is
`go install`ed at its tag. Binaries are cached under ~/.cache/secoctl/cluster/<key>, the key being
the versions and the build modules' contents.

Building is a step of its own (`python -m tests.cluster.binaries`, run by `make test` before
pytest starts): a cold build takes over ten minutes on two cores, longer than any per-test
timeout, so the tests only look the binaries up in the cache and fail with the command to run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
BUILD_COMMAND = "python -m tests.cluster.binaries"


class BuildFailed(RuntimeError):
    """A Go command failed; the message ends with the Go tool's last lines."""


def cache_key() -> str:
    digest = hashlib.sha256()
    for path in sorted(GOBUILD.rglob("go.*")):
        digest.update(path.read_bytes())
    return f"k8s-{KUBERNETES}-etcd-{ETCD}-kwok-{KWOK}-{digest.hexdigest()[:12]}"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "secoctl" / "cluster" / cache_key()


def _complete(target: Path) -> bool:
    stages = {p.name for p in (target / "stages").glob("*.yaml")}
    return all((target / name).is_file() for name in ALL) and stages == {Path(s).name for s in KWOK_STAGES}


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(["go", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise BuildFailed(f"go {' '.join(args)} (in {cwd}) exited {result.returncode}:\n"
                          + "\n".join(result.stdout.splitlines()[-40:]))
    return result.stdout


def _steps(staging: Path) -> list[tuple[str, list[str], Path]]:
    """(component, go arguments, module folder) in build order; later steps reuse the Go build cache."""
    flags = ["-trimpath", "-ldflags=-s -w"]
    steps = [(command, ["build", *flags, "-o", str(staging / command), f"k8s.io/kubernetes/cmd/{command}"],
              GOBUILD / "kubernetes") for command in KUBERNETES_COMMANDS]
    steps.append(("etcd", ["build", *flags, "-o", str(staging / "etcd"), "go.etcd.io/etcd/server/v3"],
                  GOBUILD / "etcd"))
    steps.append(("kwok", ["install", *flags, f"sigs.k8s.io/kwok/cmd/kwok@{KWOK}"], GOBUILD))
    return steps


def _environment(staging: Path) -> dict[str, str]:
    return {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", "GOBIN": str(staging)}


@contextlib.contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A staging folder beside `target`, renamed to it only when the block completes, removed if it fails:
    nothing that looks built is ever half built."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def required(target: Path, complete: bool, what: str) -> Path:
    """`target` for a test, or the command that builds it: the tests never build (a build outlasts them)."""
    if not complete:
        raise FileNotFoundError(f"{what} not built in {target}: run `{BUILD_COMMAND}` (`make test` runs it before pytest)")
    return target


def build(target: Path, log=print) -> None:
    """Build every component into a staging folder and rename it to `target` only when all succeeded."""
    if shutil.which("go") is None:
        raise BuildFailed("the cluster tests build Kubernetes from source and need the Go tool on PATH")
    started = time.monotonic()
    with staged(target) as staging:
        env = _environment(staging)
        for component, args, folder in _steps(staging):
            step_started = time.monotonic()
            log(f"cluster binaries: building {component} ...")
            _go(args, folder, env)
            log(f"cluster binaries: {component} built in {time.monotonic() - step_started:.0f} s "
                f"({time.monotonic() - started:.0f} s so far)")
        copy_stages(staging, env)
    log(f"cluster binaries: all built in {time.monotonic() - started:.0f} s into {target}")


def copy_stages(target: Path, env: dict[str, str]) -> None:
    """kwok's stage YAMLs, from its module in the Go module cache, as `target/stages/*.yaml`."""
    _go(["mod", "download", f"sigs.k8s.io/kwok@{KWOK}"], GOBUILD, env)
    modules = Path(_go(["env", "GOMODCACHE"], GOBUILD, env).strip())
    stages = modules / f"sigs.k8s.io/kwok@{KWOK}" / "kustomize" / "stage"
    if (target / "stages").exists():
        shutil.rmtree(target / "stages")
    (target / "stages").mkdir()
    for relative in KWOK_STAGES:
        shutil.copy(stages / relative, target / "stages" / Path(relative).name)


def ensure(log=print) -> Path:
    """The directory holding every binary, built first if the cache lacks it."""
    target = cache_dir()
    if all((target / name).is_file() for name in ALL) and not _complete(target):
        copy_stages(target, _environment(target))  # the stage list changed; the binaries did not
    if _complete(target):
        log(f"cluster binaries: cached in {target}")
        return target
    build(target, log)
    return target


def cached() -> Path:
    """The cached binaries, for the tests: never builds, since a build outlasts any test's timeout."""
    target = cache_dir()
    return required(target, _complete(target), "the cluster binaries are")


def main() -> int:
    from tests.cluster import kueue  # its own cache and key: a Kueue upgrade rebuilds only Kueue
    from tests.cluster.realnode import binaries as node_binaries  # likewise

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        ensure(log)
        kueue.ensure(log)
        if os.geteuid() == 0:
            node_binaries.ensure(log)
        else:
            log("node binaries: not built: the real-node test (tests/cluster/test_real_node.py) runs as root only")
    except BuildFailed as error:
        print(f"cluster binaries: build failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
