import json
import subprocess
import sys

from tests.conftest import ROOT


def test_the_control_plane_never_imports_torch_or_the_kubernetes_client():
    code = ("import sys, secoctl.cli, secoctl.render, secoctl.plan, secoctl.backends.local, secoctl.console; "
            "print(sorted(m for m in ('torch', 'kubernetes', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"


def test_cli_benchmark_reports_a_median_under_half_a_second():
    result = subprocess.run([sys.executable, "-m", "benchmarks.cli", "--runs", "3"], capture_output=True,
                            text=True, check=True, cwd=ROOT)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["torch_imported"] is False
    assert 0 < report["median_s"] < 0.5, report
