import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def run_cli(
    *args: str, storage: Path | None = None, environment: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """The real `secoctl` in a subprocess: real exit codes, real stderr; `environment` adds variables."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("SECOCTL_STORAGE", None)
    if storage is not None:
        env["SECOCTL_STORAGE"] = storage.as_uri()
    env.update(environment or {})
    return subprocess.run(
        [sys.executable, "-m", "secoctl", *args],
        capture_output=True,
        text=True,
        cwd=kwargs.pop("cwd", ROOT),
        env=env,
        timeout=kwargs.pop("timeout", 120),
        **kwargs,
    )


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    path = tmp_path / "storage"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _isolated_home(monkeypatch, tmp_path):
    """No user's kubeconfig, data or cache folder leaks into a test (XDG_CACHE_HOME would outrank HOME)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
