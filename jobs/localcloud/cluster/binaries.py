"""The real Kubernetes components the cluster tests run, built from source with the Go tool.

`gobuild/kubernetes` requires k8s.io/kubernetes at a pinned release and maps every staging module
to its published twin; `gobuild/etcd` pins the etcd server that release pairs with; kwok is
`go install`ed at its tag. Binaries are cached under ~/.cache/secoctl/cluster/<key>, the key being
the versions, the build modules' contents and the Go flags, so a cache built otherwise is never taken
for this one. Every build here (Kueue's and the real node's too) is stripped (`-s -w`) and built with
`-trimpath`, and all share one Go build cache (Go's own, $GOCACHE or ~/.cache/go-build: it is keyed
by content, flags included, so one folder serves every target). Components of different Go modules
build `BUILD_LANES` at a time; those of one module build one after another, as they share most
packages and the second finds them in the build cache.

Building is a step of its own (`python -m jobs.localcloud.cluster build`, run by `make test` before
pytest starts): a cold build takes over ten minutes on two cores, longer than any per-test
timeout, so the tests only look the binaries up in the cache and fail with the command to run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from secoctl.cache import cache_root

KUBERNETES = "v1.36.3"
ETCD = "v3.6.8"
KWOK = "v0.8.0"
GOBUILD = Path(__file__).parent / "gobuild"
KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
# kwok's own stage definitions for node and pod life cycles, copied beside the binary. Nodes heartbeat
# through Leases; the plain node-heartbeat stage rewrites node status without its addresses, which
# breaks the apiserver's way to a node's logs.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-delete.yaml",
    "pod/chaos/pod-container-running-failed.yaml",
)
ALL = (*KUBERNETES_COMMANDS, "etcd", "kwok")
BUILD_COMMAND = "python -m jobs.localcloud.cluster build"
GO_FLAGS = ("-trimpath", "-ldflags=-s -w")  # no file paths and no symbol tables in the binaries: smaller, faster links
BUILD_LANES = 2  # the machines that run the suite have two cores; a link step uses one


class BuildFailed(RuntimeError):
    """A Go command failed; the message ends with the Go tool's last lines."""


def build_digest(paths: list[Path]) -> str:
    """What decides a build besides its versions: the files it builds from, and the Go flags."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.read_bytes())
    digest.update("\0".join(GO_FLAGS).encode())
    return digest.hexdigest()[:12]


def cache_key() -> str:
    return f"k8s-{KUBERNETES}-etcd-{ETCD}-kwok-{KWOK}-{build_digest(list(GOBUILD.rglob('go.*')))}"


def cache_dir() -> Path:
    return cache_root("cluster", cache_key())


def _complete(target: Path) -> bool:
    stages = {p.name for p in (target / "stages").glob("*.yaml")}
    return all((target / name).is_file() for name in ALL) and stages == {Path(s).name for s in KWOK_STAGES}


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["go", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if result.returncode != 0:
        raise BuildFailed(
            f"go {' '.join(args)} (in {cwd}) exited {result.returncode}:\n"
            + "\n".join(result.stdout.splitlines()[-40:])
        )
    return result.stdout


def _steps(staging: Path) -> list[tuple[str, list[str], Path]]:
    """(component, go arguments, module folder) in build order; later steps reuse the Go build cache."""
    steps = [
        (
            command,
            ["build", *GO_FLAGS, "-o", str(staging / command), f"k8s.io/kubernetes/cmd/{command}"],
            GOBUILD / "kubernetes",
        )
        for command in KUBERNETES_COMMANDS
    ]
    steps.append(
        ("etcd", ["build", *GO_FLAGS, "-o", str(staging / "etcd"), "go.etcd.io/etcd/server/v3"], GOBUILD / "etcd")
    )
    steps.append(("kwok", ["install", *GO_FLAGS, f"sigs.k8s.io/kwok/cmd/kwok@{KWOK}"], GOBUILD))
    return steps


def lanes(steps: list[tuple[str, list[str], Path]]) -> list[list[tuple[str, list[str], Path]]]:
    """The steps grouped by the folder they build in (one Go module each), in their order."""
    by_folder: dict[Path, list[tuple[str, list[str], Path]]] = {}
    for step in steps:
        by_folder.setdefault(step[2], []).append(step)
    return list(by_folder.values())


def run_steps(
    steps: list[tuple[str, list[str], Path]], env: dict[str, str], what: str, log: Callable[[str], None] = print
) -> None:
    """Every step, `BUILD_LANES` modules at a time, logging each component's build time; the first failure raises."""
    started = time.monotonic()

    def lane(steps_of_one_module: list[tuple[str, list[str], Path]]) -> None:
        for component, args, folder in steps_of_one_module:
            step_started = time.monotonic()
            log(f"{what}: building {component} ...")
            _go(args, folder, env)
            log(
                f"{what}: {component} built in {time.monotonic() - step_started:.0f} s "
                f"({time.monotonic() - started:.0f} s so far)"
            )

    with ThreadPoolExecutor(max_workers=BUILD_LANES, thread_name_prefix="go-build") as pool:
        for done in [pool.submit(lane, steps) for steps in lanes(steps)]:
            done.result()


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
        raise FileNotFoundError(
            f"{what} not built in {target}: run `{BUILD_COMMAND}` (`make test` runs it before pytest)"
        )
    return target


def build(target: Path, log=print) -> None:
    """Build every component into a staging folder and rename it to `target` only when all succeeded."""
    if shutil.which("go") is None:
        raise BuildFailed("the cluster tests build Kubernetes from source and need the Go tool on PATH")
    started = time.monotonic()
    with staged(target) as staging:
        env = _environment(staging)
        run_steps(_steps(staging), env, "cluster binaries", log)
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
