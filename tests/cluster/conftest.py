"""A real control plane for the session, `manifests/` applied with kubectl, storage on a claimed volume."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from jobs.localcloud.cluster import controlplane
from jobs.localcloud.cluster import kueue as kueue_build
from secoctl import render

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, CLAIM = controlplane.NAMESPACE, controlplane.CLAIM


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """One control plane for every cluster test of the session. Its apiserver is the version-stamped one, which
    Kueue requires, so test_kueue.py starts Kueue on it (and removes Kueue's webhooks when it is done)."""
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("cluster")
    plane = controlplane.ControlPlane(workdir, bin=kueue_build.control_plane_bin(workdir / "bin")).start()
    print(f"control plane up in {time.monotonic() - started:.1f} s", file=sys.stderr)
    prepare(plane, tmp_path_factory)
    yield plane
    plane.stop()


def prepare(plane, tmp_path_factory) -> None:
    plane.prepare(tmp_path_factory.mktemp("storage"))


@pytest.fixture
def kube_env(cluster, tmp_path) -> dict[str, str]:
    """The environment of a person whose kubeconfig points at the test cluster."""
    env = dict(os.environ, KUBECONFIG=str(cluster.admin_kubeconfig), PYTHONPATH=str(ROOT), HOME=str(tmp_path))
    env.pop("SECOCTL_STORAGE", None)
    return env


def secoctl(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "secoctl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def status_rows(kube_env, experiment: str) -> dict[str, dict]:
    """`secoctl status EXPERIMENT -o json`, one row per stage (and the driver), by stage name."""
    result = secoctl(kube_env, "status", experiment, "-n", NAMESPACE, "-o", "json")
    assert result.returncode == 0, result.stderr
    return {row["stage"]: row for row in json.loads(result.stdout)}


def spec_file(path: Path, name: str, storage: Path, **changes) -> Path:
    """A small experiment whose storage is the claimed volume; `changes` are merged into spec."""
    spec = {
        "storage": storage.as_uri(),
        "storageClaim": CLAIM,
        "image": "registry.example/secoctl:test",
        "collect": {"source": "stac", "stacUrl": "http://stac.example", "locations": 8, "workers": 2},
        "pretrain": {"backbone": "resnet18", "nodes": 2, "gpusPerNode": 1, "batchSize": 16, "maxSteps": 10},
        "evaluate": [{"task": "eurosat", "protocol": "linear", "baselines": ["random"]}],
        "publish": {"name": f"{name}-weights", "version": "1"},
    }
    metadata = {"name": name, **changes.pop("metadata", {})}
    for key, value in changes.items():
        spec[key] = {**spec[key], **value} if isinstance(spec.get(key), dict) else value
    path.write_text(
        yaml.safe_dump({"apiVersion": "seco.dev/v1alpha1", "kind": "Experiment", "metadata": metadata, "spec": spec})
    )
    return path


def start_driver(cluster, spec: Path, experiment: str, tmp_path: Path) -> subprocess.Popen:
    """The driver as the rendered driver pod runs it, with a token of the driver's own ServiceAccount."""
    config = cluster.service_account_kubeconfig(NAMESPACE, f"{experiment}-driver", tmp_path / "driver.kubeconfig")
    env = dict(os.environ, KUBECONFIG=str(config), PYTHONPATH=str(ROOT), HOME=str(tmp_path))
    return subprocess.Popen(
        [sys.executable, "-m", "secoctl.driver", "--spec", str(spec), "--namespace", NAMESPACE, "--poll", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )


def wait_for(what: str, predicate, timeout: float = 60, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def kube_json(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def pods_of(cluster, experiment: str, stage: str) -> list[dict]:
    selector = f"{render.LABEL_EXPERIMENT}={experiment},{render.LABEL_STAGE}={stage}"
    return kube_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", selector)["items"]


def release(cluster, experiment: str, stage: str) -> None:
    """Lets kwok finish a stage's pods that `secoctl.test/hold: "true"` keeps running
    (jobs/localcloud/cluster/stages.yaml)."""
    cluster.kubectl(
        "label",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        f"{render.LABEL_EXPERIMENT}={experiment},{render.LABEL_STAGE}={stage}",
        "secoctl.test/hold=false",
        "--overwrite",
    )


@contextlib.contextmanager
def cleaned_up(kube_env: dict, *experiments: str) -> Iterator[list[subprocess.Popen]]:
    """However the test ends, the drivers it appends are killed and its experiments purged,
    so the next test on the shared cluster starts from nothing of theirs."""
    drivers: list[subprocess.Popen] = []
    try:
        yield drivers
    finally:
        for driver in drivers:
            driver.kill()
            driver.wait()
        for name in experiments:
            secoctl(kube_env, "delete", name, "-n", NAMESPACE, "--purge")


def stored_stage_tree(storage: str, experiment: str, stage: str):
    """Where a stored experiment's stage keeps its files: its dataset's tree for collect and shards."""
    from secoctl import plan
    from secoctl.stored import stage_tree, stored_experiment
    from secoctl.tree import experiment_uri

    applied = stored_experiment(experiment_uri(storage, experiment))
    return stage_tree(storage, experiment, plan.stage(applied, stage))
