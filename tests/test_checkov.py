"""checkov over what `secoctl render examples/*.yaml` prints: no failed check but the accepted ones.

checkov cannot share our lock: every release since 3.1.48 pins packaging<24, which pytest 9 cannot
use, and the older ones pin networkx<2.7 (ours: 3.6). It therefore runs from a virtual environment
of its own, installed with uv from tests/checkov-requirements.lock (compiled from
tests/checkov-requirements.in by `make lock`) and cached under
~/.cache/secoctl/tools/checkov-<version>-<lock digest>.

Each accepted check is listed, with the same one-line reason, in the README's security section.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT, run_cli

REQUIREMENTS_IN = ROOT / "tests" / "checkov-requirements.in"
REQUIREMENTS_LOCK = ROOT / "tests" / "checkov-requirements.lock"
README = ROOT / "README.md"

# check id: (the objects it may fail on, as a regex over checkov's "Kind.namespace.name", reason)
ACCEPTED: dict[str, tuple[str, str]] = {
    "CKV_K8S_11": (
        r"Job\..*",
        "CPU limits: pods request CPU but are not limited, so a stage may use idle cores "
        "without CFS throttling; memory, which cannot be taken back, is limited.",
    ),
    "CKV_K8S_21": (
        r"\w+\.default\..*",
        "default namespace: `render` talks to no cluster and writes `default` unless given "
        "`-n`; `apply` uses `-n` or the context's namespace.",
    ),
    "CKV_K8S_35": (
        r"Job\..*",
        "Secrets as environment variables: the spec's storage Secret reaches pods through "
        "`envFrom`, as s3fs (botocore) reads its credentials from the environment, and the collect "
        "pods get `PC_SDK_SUBSCRIPTION_KEY` from its Secret as planetary_computer reads it; the spec "
        "names the Secret, never its values.",
    ),
    "CKV_K8S_38": (
        r"Job\.[^.]+\.[^.]+-driver",
        "service account token mounted: only the driver's, which it needs to get and patch "
        "its own Jobs and list pods; stage pods mount none.",
    ),
    "CKV_K8S_43": (
        r"Job\..*",
        "image not pinned by digest: `spec.image` is the user's and render resolves no tag; "
        "give `spec.image` as `NAME@sha256:...` to pin it.",
    ),
}


def checkov_version() -> str:
    (requirement,) = [
        line.strip() for line in REQUIREMENTS_IN.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    return requirement.removeprefix("checkov==")


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if not found:
        pytest.fail("uv is needed to install checkov (make test installs it into .venv)")
    return found


@pytest.fixture(scope="session")
def checkov() -> Path:
    """checkov's entry point, installed once per version and lock into its own virtual environment.

    Session-scoped, so it runs before the per-test isolated HOME and finds the machine's cache.
    """
    digest = hashlib.sha256(REQUIREMENTS_LOCK.read_bytes()).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "secoctl" / "tools"
    target = base / f"checkov-{checkov_version()}-{digest}"
    done = target / ".installed"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second test process waits for the first one's install
        if not done.is_file():
            shutil.rmtree(target, ignore_errors=True)
            for args in (
                ["venv", "--quiet", "--python", sys.executable, str(target)],
                ["pip", "install", "--quiet", "--python", str(target / "bin" / "python"), "-r", str(REQUIREMENTS_LOCK)],
            ):
                result = subprocess.run([_uv(), *args], capture_output=True, text=True, timeout=600)
                assert result.returncode == 0, f"uv {' '.join(args)}:\n{result.stderr[-4000:]}"
            done.touch()
    return target / "bin" / "checkov"


def failed_checks(checkov: Path, directory: Path) -> dict[str, set[str]]:
    """check id -> the resources ("Kind.namespace.name") it failed on, over every file in directory."""
    result = subprocess.run(
        [
            str(checkov),
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=directory,
    )
    # 0: nothing failed, 1: some check failed; anything else is checkov's own error.
    assert result.returncode in (0, 1), result.stderr[-4000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed: dict[str, set[str]] = {}
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["results"].get("parsing_errors")
        assert report["summary"]["resource_count"] > 0
        for check in report["results"]["failed_checks"]:
            failed.setdefault(check["check_id"], set()).add(check["resource"])
    return failed


def readme_checkov_section() -> str:
    """The README's checkov paragraph (under "### Security: what the driver can do"), whitespace folded."""
    text = README.read_text()
    security = text.split("### Security: what the driver can do", 1)[1]
    security = re.split(r"\n#{1,3} ", security, maxsplit=1)[0]
    match = re.search(r"\n#### checkov\n(.*?)(?=\n#{1,4} |\Z)", security, re.S)
    assert match, 'the README\'s security section has no "#### checkov" part'
    return " ".join(match.group(1).split())


def test_checkov_fails_no_check_on_the_rendered_examples_but_the_accepted_ones(checkov, tmp_path):
    for example in EXAMPLES:
        result = run_cli("render", str(example))
        assert result.returncode == 0, result.stderr
        (tmp_path / example.name).write_text(result.stdout)
    failed = failed_checks(checkov, tmp_path)
    unexpected = {
        check: sorted(
            resource
            for resource in resources
            if check not in ACCEPTED or not re.fullmatch(ACCEPTED[check][0], resource)
        )
        for check, resources in failed.items()
    }
    unexpected = {check: resources for check, resources in unexpected.items() if resources}
    assert not unexpected, f"checkov checks failed that are not accepted (fix render or accept them): {unexpected}"
    stale = sorted(set(ACCEPTED) - set(failed))
    assert not stale, f"accepted checks that no longer fail; remove them here and from the README: {stale}"


def test_every_accepted_check_is_in_the_readme_with_its_reason():
    section = readme_checkov_section()
    assert f"checkov {checkov_version()}" in section
    for check, (_, reason) in ACCEPTED.items():
        assert f"`{check}` {reason}" in section, f"README: add `- \\`{check}\\` {reason}`"
    assert set(re.findall(r"(?:^|\s)- `(CKV_\w+)`", section)) == set(ACCEPTED)
