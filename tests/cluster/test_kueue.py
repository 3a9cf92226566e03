"""Stages queued through a real Kueue controller (built from its release, webhooks served and called).

What kwok can and cannot show: pods are scheduled, run, complete and are deleted by the real
controllers, but run no code. So preemption is shown on the Job and the Workload (suspended, pods
deleted, readmitted, never counted as failures), not on a training process reloading its checkpoint:
the resumed Job is the same Job with the same pod template, whose pretrain part resumes from
`pretrain/checkpoints` in storage (tests/pretrain cover that path).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secoctl import render
from tests.cluster.conftest import NAMESPACE, kube_json, secoctl, spec_file, start_driver, wait_for
from tests.cluster.kueue import Kueue

ROOT = Path(__file__).resolve().parents[2]
QUEUES = ROOT / "manifests" / "kueue"
CLUSTER_QUEUE = "gpu-cluster-queue"
URGENT = "seco-urgent"  # a PriorityClass above seco-batch, made here


@pytest.fixture(scope="module")
def kueue(cluster):
    controller = Kueue(cluster).start()
    cluster.kubectl("apply", "-f", str(QUEUES))
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": URGENT},
        "value": 2000, "description": "test: work that may preempt seco-batch"}))
    yield controller
    cluster.kubectl("delete", "-f", str(QUEUES), "--ignore-not-found", "--timeout=30s", check=False)
    cluster.kubectl("delete", "priorityclass", URGENT, "--ignore-not-found", check=False)
    # Without Kueue serving them, webhooks that fail closed would refuse every later Job.
    cluster.kubectl("delete", "validatingwebhookconfiguration", "kueue-validating-webhook-configuration",
                    "--ignore-not-found", check=False)
    cluster.kubectl("delete", "mutatingwebhookconfiguration", "kueue-mutating-webhook-configuration",
                    "--ignore-not-found", check=False)
    controller.stop()


def gpu_quota(cluster, gpus: int) -> None:
    queue = kube_json(cluster, "get", "clusterqueue", CLUSTER_QUEUE)
    resources = queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"]
    index = next(i for i, r in enumerate(resources) if r["name"] == render.GPU_RESOURCE)
    cluster.kubectl("patch", "clusterqueue", CLUSTER_QUEUE, "--type=json", "-p", json.dumps([
        {"op": "replace", "path": f"/spec/resourceGroups/0/flavors/0/resources/{index}/nominalQuota", "value": str(gpus)}]))


def pods_of(cluster, experiment: str, stage: str) -> list[dict]:
    selector = f"{render.LABEL_EXPERIMENT}={experiment},{render.LABEL_STAGE}={stage}"
    return kube_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", selector)["items"]


def workload_of(cluster, job_name: str) -> dict | None:
    job = kube_json(cluster, "get", "job", job_name, "-n", NAMESPACE)
    for workload in kube_json(cluster, "get", "workloads.kueue.x-k8s.io", "-n", NAMESPACE)["items"]:
        if any(o["uid"] == job["metadata"]["uid"] for o in workload["metadata"].get("ownerReferences", [])):
            return workload
    return None


def has_condition(obj: dict | None, kind: str, status: str = "True") -> dict | None:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions", [])
                 if c["type"] == kind and c["status"] == status), None)


def status_rows(kube_env, experiment: str) -> dict[str, dict]:
    result = secoctl(kube_env, "status", experiment, "-n", NAMESPACE, "-o", "json")
    assert result.returncode == 0, result.stderr
    return {row["stage"]: row for row in json.loads(result.stdout)}


def test_a_pretrain_is_admitted_whole_or_not_at_all_and_status_names_its_place_and_kueues_reason(
        kueue, kube_env, cluster, tmp_path):
    gpu_quota(cluster, 2)  # each pretrain below needs 3 GPUs: 3 nodes of 1
    drivers = []
    try:
        for name in ("gang-first", "gang-second"):
            spec = spec_file(tmp_path / f"{name}.yaml", name, cluster.storage, queueName="gpu-queue",
                             pretrain={"nodes": 3, "gpusPerNode": 1})
            assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
            (tmp_path / name).mkdir()
            drivers.append(start_driver(cluster, spec, name, tmp_path / name))
            # Collect (CPU only) goes through Kueue too, and completes; then pretrain waits for GPUs.
            wait_for(f"{name}'s pretrain Workload to be found wanting", lambda: has_condition(
                workload_of(cluster, f"{name}-pretrain"), "QuotaReserved", "False"), timeout=90)
        for name in ("gang-first", "gang-second"):
            workload = workload_of(cluster, f"{name}-pretrain")
            assert workload["spec"]["podSets"][0]["count"] == 3  # one unit of admission: the whole stage
            assert "insufficient quota for nvidia.com/gpu" in has_condition(workload, "QuotaReserved", "False")["message"]
            job = kube_json(cluster, "get", "job", f"{name}-pretrain", "-n", NAMESPACE)
            assert job["spec"]["suspend"] is True and not pods_of(cluster, name, "pretrain")
        first, second = status_rows(kube_env, "gang-first")["pretrain"], status_rows(kube_env, "gang-second")["pretrain"]
        assert first["state"] == second["state"] == "queued"
        assert "LocalQueue gpu-queue, position 1 of 2" in first["reason"], first
        assert "LocalQueue gpu-queue, position 2 of 2" in second["reason"], second
        assert "insufficient quota for nvidia.com/gpu" in first["reason"]
        table = secoctl(kube_env, "status", "gang-second", "-n", NAMESPACE)
        assert "queued" in table.stdout and "position 2 of 2" in table.stdout

        gpu_quota(cluster, 3)  # room for exactly one of the two
        wait_for("the first pretrain's pods", lambda: len(pods_of(cluster, "gang-first", "pretrain")) == 3, timeout=60)
        admitted = workload_of(cluster, "gang-first-pretrain")
        assert has_condition(admitted, "Admitted")
        assert admitted["status"]["admission"]["podSetAssignments"][0]["count"] == 3
        wait_for("the first pretrain to complete", lambda: has_condition(
            kube_json(cluster, "get", "job", "gang-first-pretrain", "-n", NAMESPACE), "Complete"), timeout=60)
        # The second's turn comes once the GPUs are free again: admitted whole, it runs to the end.
        wait_for("the second pretrain to complete", lambda: has_condition(
            kube_json(cluster, "get", "job", "gang-second-pretrain", "-n", NAMESPACE), "Complete"), timeout=90)
        second = kube_json(cluster, "get", "job", "gang-second-pretrain", "-n", NAMESPACE)["status"]
        assert second["succeeded"] == 3 and second.get("failed", 0) == 0
    finally:
        for driver in drivers:
            driver.kill()
            driver.wait()
        for name in ("gang-first", "gang-second"):
            secoctl(kube_env, "delete", name, "-n", NAMESPACE, "--purge")
