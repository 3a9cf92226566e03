"""What the rendered pods run must exist in the image: checked against the package and the Dockerfile.

No Docker engine runs here, so this reads the Dockerfile and resolves every container command of
every example the way the image would: `python -m M` and `torchrun ... -m M` need module M in the
installed package (and torchrun, torch's console script), the image must copy M's top-level package
and install the pinned lock, and it must run as the user the pods declare.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

import pytest

from secoctl import render
from secoctl.spec.file import load_documents

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "images" / "secoctl" / "Dockerfile"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def commands(example: Path) -> list[list[str]]:
    experiment = load_documents(example.read_text(), str(example))[0]
    found = []
    for obj in render.render(experiment, "seco"):
        if obj["kind"] == "Job":
            for argv in (c["command"] for c in obj["spec"]["template"]["spec"]["containers"]):
                # A stage part runs under jobs.common.logged: both commands must resolve in the image.
                found.extend([argv[: argv.index("--")], argv[argv.index("--") + 1 :]] if "--" in argv else [argv])
    return found


def module_of(argv: list[str]) -> str:
    assert argv[0] in ("python", "torchrun"), f"a pod runs {argv[0]!r}, which the image does not provide"
    return argv[argv.index("-m") + 1]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_every_pod_command_resolves_to_a_module_of_the_package(example):
    argvs = commands(example)
    assert {module_of(a) for a in argvs} >= {"secoctl.driver", "jobs.collect", "jobs.pretrain"}
    dockerfile = DOCKERFILE.read_text()
    for argv in argvs:
        module = module_of(argv)
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{module} (run by {' '.join(argv[:4])}) is missing"
        if spec.submodule_search_locations is not None:  # a package runs through its __main__
            assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} cannot be run with -m"
        assert f"COPY {module.split('.')[0]} ./{module.split('.')[0]}" in dockerfile
        if argv[0] == "torchrun":
            scripts = {e.name for e in importlib.metadata.distribution("torch").entry_points}
            assert "torchrun" in scripts


def test_the_image_installs_the_pinned_lock_and_runs_as_the_pods_user():
    dockerfile = DOCKERFILE.read_text()
    lock = DOCKERFILE.parent / "requirements.lock"
    assert f"COPY images/secoctl/{lock.name}" in dockerfile and "--no-deps" in dockerfile
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock.read_text(), re.M))
    development = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", (ROOT / "requirements.lock").read_text(), re.M))
    assert pins["torch"] == development["torch"] and {k: development.get(k) for k in pins} == pins
    assert re.search(rf"^USER {render.RUN_AS_USER}:{render.RUN_AS_USER}$", dockerfile, re.M)
    assert "/opt/secoctl/bin:$PATH" in dockerfile  # python, torchrun and secoctl on PATH
