"""N-band exports keep their stem in the timm and torchgeo releases users have, not only in the lock's.

Each release is installed once (`uv pip install --target`, no dependencies: torch and the rest come from this
environment) into ~/.cache/secoctl/compat/<package>-<version>, reused by later runs, and each export is loaded
there in a subprocess with that folder first on PYTHONPATH, exactly as the export's README says.

The versions are the ends of the ranges the exports are verified for, and timm 1.0.30 (every timm before 1.0.31
replaced a stem that is not 3-channel with a random init when the cfg named it in first_conv):
- timm >= 1.0.16: the HF folder loads through `local-dir:`, which timm 1.0.16 introduced;
- torchgeo >= 0.7: 0.7 still imports rtree and fiona, which this environment lacks, so they are installed beside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from safetensors.torch import save_file

from secoctl import weights
from tests.weights.test_bands import TWELVE, twelve_band_state

COMPAT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "secoctl" / "compat"
LOADER = Path(__file__).with_name("compat_load.py")
UV = Path(sys.executable).with_name("uv")
RELEASES = [("timm", "1.0.16"), ("timm", "1.0.30"), ("timm", "1.0.31"), ("torchgeo", "0.7.0"), ("torchgeo", "0.8.1")]
# The pinned packages a release imports that this environment does not hold, installed beside it.
EXTRAS = {("torchgeo", "0.7.0"): ("rtree==1.4.1", "fiona==1.10.1")}
FORMATS = {"timm": ("timm", "hf"), "torchgeo": ("torchgeo",)}


def installed(package: str, version: str) -> Path:
    """The cached target folder holding `package==version` (and its extras), installed on first use; torch and the
    rest of its dependencies come from this environment."""
    folder = COMPAT_CACHE / f"{package}-{version}"
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        subprocess.run(
            [
                str(UV),
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--python",
                sys.executable,
                "--target",
                str(scratch),
                f"{package}=={version}",
                *EXTRAS.get((package, version), ()),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """(12-band reference safetensors, {format: export folder}) of one pushed 12-band ResNet-18."""
    root = tmp_path_factory.mktemp("compat")
    reference = root / "ms.safetensors"
    save_file(twelve_band_state(), str(reference))
    storage = (root / "store").as_uri()
    weights.push(storage, reference, "ms", "1", bands=TWELVE)
    folders = {}
    for fmt in ("timm", "hf", "torchgeo"):
        weights.export(storage, "ms:1", fmt, root / fmt)
        folders[fmt] = root / fmt
    return reference, folders


@pytest.mark.slow
@pytest.mark.parametrize("package, version", RELEASES, ids=[f"{p}-{v}" for p, v in RELEASES])
def test_12_band_exports_load_conv1_exactly_in_each_verified_release(package: str, version: str, exports):
    reference, folders = exports
    target = installed(package, version)
    environment = dict(os.environ, PYTHONPATH=str(target))
    for fmt in FORMATS[package]:
        result = subprocess.run(
            [sys.executable, str(LOADER), fmt, str(folders[fmt]), str(reference)],
            capture_output=True,
            text=True,
            env=environment,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        loaded_package, loaded_version, difference = result.stdout.strip().splitlines()[-1].split()
        assert (loaded_package, loaded_version) == (package, version), f"{fmt}: {result.stdout}"
        assert float(difference) == 0.0, f"{fmt} in {package} {version}: conv1 max |diff| {difference}"
