"""The cluster binaries are built before pytest; the tests only read the cache, and a failed build says why."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.cluster import binaries
from tests.conftest import ROOT


def test_the_tests_never_build_and_name_the_command_that_does(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"python -m tests\.cluster\.binaries"):
        binaries.cached()
    assert not (tmp_path / "secoctl").exists()


@pytest.mark.skipif(shutil.which("go") is None, reason="needs the Go tool")
def test_a_failed_build_exits_1_with_the_go_tools_last_lines_and_leaves_no_half_built_cache(tmp_path):
    module = tmp_path / "broken"
    module.mkdir()
    (module / "go.mod").write_text("module example.com/broken\n\ngo 1.22\n")
    (module / "main.go").write_text("package main\n\nfunc main() { undefinedCall() }\n")
    code = ("import sys; from pathlib import Path; from tests.cluster import binaries; "
            f"binaries._steps = lambda staging: [('broken', ['build', '-o', str(staging / 'broken'), '.'], Path({str(module)!r}))]; "
            "sys.exit(binaries.main())")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**binaries.os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 1
    assert "cluster binaries: building broken" in result.stderr
    assert "build failed" in result.stderr and "undefined: undefinedCall" in result.stderr
    cluster_cache = tmp_path / "cache" / "secoctl" / "cluster"
    assert list(cluster_cache.iterdir()) == []  # the staging folder was removed, nothing looks built
