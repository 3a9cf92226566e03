"""The cluster binaries are built before pytest; the tests only read the cache, and a failed build says why."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from jobs.localcloud.cluster import binaries
from tests.conftest import ROOT


def test_the_tests_never_build_and_name_the_command_that_does(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"python -m jobs\.localcloud\.cluster build"):
        binaries.cached()
    assert not (tmp_path / "secoctl").exists()


@pytest.mark.skipif(shutil.which("go") is None, reason="needs the Go tool")
def test_a_failed_build_exits_1_with_the_go_tools_last_lines_and_leaves_no_half_built_cache(tmp_path):
    module = tmp_path / "broken"
    module.mkdir()
    (module / "go.mod").write_text("module example.com/broken\n\ngo 1.22\n")
    (module / "main.go").write_text("package main\n\nfunc main() { undefinedCall() }\n")
    code = (
        "import sys; from pathlib import Path; from jobs.localcloud.cluster import binaries; "
        "from jobs.localcloud.cluster.__main__ import build; "
        "binaries._steps = lambda staging: "
        f"[('broken', ['build', '-o', str(staging / 'broken'), '.'], Path({str(module)!r}))]; "
        "sys.exit(build())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**binaries.os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert result.returncode == 1
    assert "cluster binaries: building broken" in result.stderr
    assert "build failed" in result.stderr and "undefined: undefinedCall" in result.stderr
    cluster_cache = tmp_path / "cache" / "secoctl" / "cluster"
    assert list(cluster_cache.iterdir()) == []  # the staging folder was removed, nothing looks built


def test_every_go_build_is_stripped_and_trimmed(tmp_path):
    from jobs.localcloud.cluster.realnode import binaries as node_binaries

    steps = [*binaries._steps(tmp_path), *node_binaries.steps(tmp_path, tmp_path / "module")]
    assert [name for name, *_ in steps] == [
        *binaries.KUBERNETES_COMMANDS,
        "etcd",
        "kwok",
        "kubelet",
        "kube-proxy",
        "coredns",
        "pause",
    ]
    for name, args, _ in steps:
        assert args[0] in ("build", "install") and args[1:3] == ["-trimpath", "-ldflags=-s -w"], name


def test_each_cache_key_changes_with_the_go_flags(monkeypatch):
    from jobs.localcloud.cluster import kueue
    from jobs.localcloud.cluster.realnode import binaries as node_binaries

    keys = (binaries.cache_key(), kueue.cache_key(), node_binaries.cache_key(), kueue.apiserver_dir().name)
    monkeypatch.setattr(binaries, "GO_FLAGS", ("-trimpath",))
    changed = (binaries.cache_key(), kueue.cache_key(), node_binaries.cache_key(), kueue.apiserver_dir().name)
    assert all(before != after for before, after in zip(keys, changed, strict=True))
    assert binaries.cache_key().startswith(f"k8s-{binaries.KUBERNETES}-etcd-{binaries.ETCD}-kwok-{binaries.KWOK}-")


def test_components_of_one_go_module_build_in_one_lane_in_order_and_other_modules_beside_it(tmp_path):
    lanes = [[name for name, *_ in lane] for lane in binaries.lanes(binaries._steps(tmp_path))]
    assert lanes == [list(binaries.KUBERNETES_COMMANDS), ["etcd"], ["kwok"]]


@pytest.mark.skipif(shutil.which("go") is None, reason="needs the Go tool")
def test_a_built_binary_carries_the_flags_and_each_build_logs_its_time(tmp_path, monkeypatch):
    from jobs.localcloud.cluster.realnode import binaries as node_binaries

    monkeypatch.setenv("GOCACHE", str(tmp_path / "go-build"))
    pause = [step for step in node_binaries.steps(tmp_path, tmp_path / "module") if step[0] == "pause"]
    lines: list[str] = []
    binaries.run_steps(pause, binaries._environment(tmp_path), "node binaries", lines.append)
    assert lines[0] == "node binaries: building pause ..."
    assert re.fullmatch(r"node binaries: pause built in \d+ s \(\d+ s so far\)", lines[1])
    info = subprocess.run(
        ["go", "version", "-m", str(tmp_path / "pause")], capture_output=True, text=True, check=True
    ).stdout
    assert "build\t-trimpath=true" in info  # with -trimpath, Go does not record -ldflags: look for symbols instead
    symbols = subprocess.run(["go", "tool", "nm", str(tmp_path / "pause")], capture_output=True, text=True)
    assert "no symbols" in symbols.stdout + symbols.stderr
