"""The control plane starts fast because of what it does not import; guarded here, never by the clock.

Wall time depends on the machine and its load; the modules a command imports do not.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli

# Libraries none of these commands needs: the data plane, the cluster client, drawing, object
# storage, and rich (render and validate print plain text; status prints no table for no rows).
NEVER_IMPORTED = (
    "torch",
    "numpy",
    "kubernetes",
    "matplotlib",
    "PIL",
    "s3fs",
    "botocore",
    "rich",
    "mlflow",
    "tensorboard",
)

# Modules each command imports, `python -c pass`'s 64 included, measured at 289, 286 and 334 on
# 2026-11-25 (Python 3.11, typer 0.29.1, pydantic 2.14.2, fsspec 2026.9.0). Typer 0.29 builds a
# pydantic TypeAdapter per parameter, so pydantic is the bulk of every count; status adds fsspec
# (and asyncio under it) to list the storage. The headroom absorbs a library's minor release; a new
# heavy dependency (pandas alone is several hundred modules) does not fit.
MODULE_BOUND = {"render": 320, "validate": 320, "status": 370}


def imported_modules(monkeypatch, *args: str) -> list[str]:
    """Every module the real `secoctl ARGS` imports, as `python -X importtime` lists them."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    return [
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and not line.endswith("| imported package")
    ]


@pytest.mark.parametrize("command", ["render", "validate", "status"])
def test_render_validate_and_status_import_only_what_they_need(command, monkeypatch, storage):
    args = [command, "examples/seco-1m.yaml"] if command != "status" else [command, "--storage", storage.as_uri()]
    modules = imported_modules(monkeypatch, *args)
    top_level = {name.split(".")[0] for name in modules}
    assert [name for name in NEVER_IMPORTED if name in top_level] == []
    assert len(modules) <= MODULE_BOUND[command], len(modules)
    if command != "status":
        assert "fsspec" not in top_level  # neither touches storage
    else:
        # An empty storage holds no spec to read: no spec models, renderer or YAML.
        assert not {"secoctl.spec", "secoctl.render", "yaml"} & set(modules)


def test_the_control_plane_never_imports_torch_mlflow_or_the_kubernetes_client():
    code = (
        "import sys, secoctl.cli, secoctl.render, secoctl.plan, secoctl.backends.local.executor, secoctl.console; "
        "print(sorted(m for m in ('torch', 'kubernetes', 'numpy', 'mlflow', 'tensorboard') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"


def test_the_cli_benchmark_runs_and_ends_with_its_json_report():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "--runs", "1"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    report = json.loads(result.stdout.splitlines()[-1])
    assert set(report) == {
        "median_s",
        "per_command_median_s",
        "python_c_pass_median_s",
        "kubectl_median_s",
        "runs",
        "torch_imported",
    }
    assert set(report["per_command_median_s"]) == {"render", "validate", "status"}
    assert report["runs"] == 1 and report["torch_imported"] is False
