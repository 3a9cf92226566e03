"""`make quickstart TORCH=cpu`: torch and torchvision at the lock's versions from PyTorch's CPU wheel index and
the rest of the lock without the CUDA packages; `make test` and `make quickstart` still install the lock as is.
Checked through make's own dry run and the filtered requirements it writes (the CPU index is not reached)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import ROOT

CUDA = re.compile(r"(torch|torchvision|triton|nvidia-[a-z0-9-]+)==")


def pins(text: str) -> set[str]:
    return {line for line in text.splitlines() if re.match(r"[A-Za-z0-9]", line)}


def make(*args: str) -> str:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def test_the_cpu_install_takes_torch_from_the_cpu_index_and_the_rest_of_the_lock_without_cuda(tmp_path: Path):
    venv = tmp_path / "venv"
    lock = pins((ROOT / "requirements.lock").read_text())
    make(f"VENV={venv}", f"{venv}/requirements-cpu.txt")
    assert pins((venv / "requirements-cpu.txt").read_text()) == {pin for pin in lock if not CUDA.match(pin)}
    assert any(pin.startswith("nvidia-") for pin in lock) and any(pin.startswith("triton==") for pin in lock)
    dry = make("-n", "quickstart", "TORCH=cpu", f"VENV={venv}")
    torch = sorted(pin for pin in lock if pin.startswith(("torch==", "torchvision==")))
    assert len(torch) == 2
    assert "--index-url https://download.pytorch.org/whl/cpu" in dry
    assert "$(grep -E '^(torch|torchvision)==' requirements.lock)" in dry
    assert f"-r {venv}/requirements-cpu.txt" in dry and "-r requirements.lock" not in dry
    assert f"touch {venv}/.installed-cpu" in dry


def test_the_default_installs_still_take_the_whole_lock_from_pypi(tmp_path: Path):
    venv = tmp_path / "venv"
    for target in ("quickstart", "test"):
        dry = make("-n", target, f"VENV={venv}")
        assert "-r requirements.lock" in dry and "download.pytorch.org" not in dry, target
        assert f"touch {venv}/.installed\n" in dry, target
