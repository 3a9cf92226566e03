"""Stages queued through a real Kueue controller (built from its release, webhooks served and called).

What kwok can and cannot show: pods are scheduled, run, complete and are deleted by the real
controllers, but run no code. So preemption is shown on the Job and the Workload (suspended, pods
deleted, readmitted, never counted as failures), not on a training process reloading its checkpoint:
the resumed Job is the same Job with the same pod template, whose pretrain part resumes from
`pretrain/checkpoints` in storage (tests/cluster/test_real_node.py shows that in real pods).
"""

from __future__ import annotations

import pytest

from jobs.localcloud.cluster.kueue import URGENT, set_quotas, with_queues
from secoctl import render
from tests.cluster.conftest import (
    NAMESPACE,
    cleaned_up,
    kube_json,
    pods_of,
    release,
    secoctl,
    spec_file,
    start_driver,
    status_rows,
    wait_for,
)


@pytest.fixture(scope="module")
def kueue(cluster):
    """Kueue on the session's control plane for this module's tests; stopping it removes its webhooks, so the
    other modules' Jobs do not go through it."""
    controller = with_queues(cluster)
    yield controller
    controller.stop()


def gpu_quota(cluster, gpus: int) -> None:
    set_quotas(cluster, {render.GPU_RESOURCE: str(gpus)})


def workload_of(cluster, job_name: str) -> dict | None:
    job = kube_json(cluster, "get", "job", job_name, "-n", NAMESPACE)
    for workload in kube_json(cluster, "get", "workloads.kueue.x-k8s.io", "-n", NAMESPACE)["items"]:
        if any(o["uid"] == job["metadata"]["uid"] for o in workload["metadata"].get("ownerReferences", [])):
            return workload
    return None


def has_condition(obj: dict | None, kind: str, status: str = "True") -> dict | None:
    return next(
        (
            c
            for c in ((obj or {}).get("status") or {}).get("conditions", [])
            if c["type"] == kind and c["status"] == status
        ),
        None,
    )


def test_a_pretrain_is_admitted_whole_or_not_at_all_and_status_names_its_place_and_kueues_reason(
    kueue, kube_env, cluster, tmp_path
):
    gpu_quota(cluster, 3)  # each pretrain below needs 4 GPUs: 4 nodes of 1
    with cleaned_up(kube_env, "gang-first", "gang-second") as drivers:
        for name in ("gang-first", "gang-second"):
            spec = spec_file(
                tmp_path / f"{name}.yaml",
                name,
                cluster.storage,
                queueName="gpu-queue",
                pretrain={"nodes": 4, "gpusPerNode": 1},
            )
            assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
            (tmp_path / name).mkdir()
            drivers.append(start_driver(cluster, spec, name, tmp_path / name))
            # Collect (CPU only) goes through Kueue too, and completes; then pretrain waits for GPUs.
            wait_for(
                f"{name}'s pretrain Workload to be found wanting",
                lambda: has_condition(workload_of(cluster, f"{name}-pretrain"), "QuotaReserved", "False"),
                timeout=90,
            )
        for name in ("gang-first", "gang-second"):
            workload = workload_of(cluster, f"{name}-pretrain")
            assert workload["spec"]["podSets"][0]["count"] == 4  # one unit of admission: the whole stage
            assert (
                "insufficient quota for nvidia.com/gpu" in has_condition(workload, "QuotaReserved", "False")["message"]
            )
            job = kube_json(cluster, "get", "job", f"{name}-pretrain", "-n", NAMESPACE)
            assert job["spec"]["suspend"] is True and not pods_of(cluster, name, "pretrain")
        first, second = (
            status_rows(kube_env, "gang-first")["pretrain"],
            status_rows(kube_env, "gang-second")["pretrain"],
        )
        assert first["state"] == second["state"] == "queued"
        assert "LocalQueue gpu-queue, position 1 of 2" in first["reason"], first
        assert "LocalQueue gpu-queue, position 2 of 2" in second["reason"], second
        assert "insufficient quota for nvidia.com/gpu" in first["reason"]
        table = secoctl(kube_env, "status", "gang-second", "-n", NAMESPACE)
        assert "queued" in table.stdout and "position 2 of 2" in table.stdout

        gpu_quota(cluster, 4)  # room for exactly one of the two
        wait_for("the first pretrain's pods", lambda: len(pods_of(cluster, "gang-first", "pretrain")) == 4, timeout=60)
        admitted = workload_of(cluster, "gang-first-pretrain")
        assert has_condition(admitted, "Admitted")
        assert admitted["status"]["admission"]["podSetAssignments"][0]["count"] == 4
        wait_for(
            "the first pretrain to complete",
            lambda: has_condition(kube_json(cluster, "get", "job", "gang-first-pretrain", "-n", NAMESPACE), "Complete"),
            timeout=60,
        )
        # The second's turn comes once the GPUs are free again: admitted whole, it runs to the end.
        wait_for(
            "the second pretrain to complete",
            lambda: has_condition(
                kube_json(cluster, "get", "job", "gang-second-pretrain", "-n", NAMESPACE), "Complete"
            ),
            timeout=90,
        )
        second = kube_json(cluster, "get", "job", "gang-second-pretrain", "-n", NAMESPACE)["status"]
        assert second["succeeded"] == 4 and second.get("failed", 0) == 0


def running_pods(cluster, experiment: str, stage: str) -> list[dict]:
    return [
        p
        for p in pods_of(cluster, experiment, stage)
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


@pytest.mark.slow  # over half a minute on two cores
def test_a_preempted_pretrain_is_suspended_then_resumed_without_charging_its_backoff_limit(
    kueue, kube_env, cluster, tmp_path
):
    gpu_quota(cluster, 2)
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    low = spec_file(
        tmp_path / "low.yaml",
        "preempted",
        cluster.storage,
        queueName="gpu-queue",
        priorityClassName="seco-batch",
        metadata={"labels": {"secoctl.test/hold": "true"}},
    )
    high = spec_file(tmp_path / "high.yaml", "urgent", cluster.storage, queueName="gpu-queue", priorityClassName=URGENT)
    with cleaned_up(kube_env, "preempted", "urgent") as drivers:
        assert secoctl(kube_env, "apply", str(low), "-n", NAMESPACE).returncode == 0
        drivers.append(start_driver(cluster, low, "preempted", tmp_path / "low"))
        wait_for(
            "the low-priority collect pods", lambda: len(running_pods(cluster, "preempted", "collect")) == 2, timeout=60
        )
        release(cluster, "preempted", "collect")
        wait_for(
            "the low-priority shards pods", lambda: len(running_pods(cluster, "preempted", "shards")) == 2, timeout=60
        )
        release(cluster, "preempted", "shards")
        first = wait_for(
            "the low-priority pretrain to run on both GPUs",
            lambda: (lambda pods: pods if len(pods) == 2 else None)(running_pods(cluster, "preempted", "pretrain")),
            timeout=60,
        )
        job_uid = kube_json(cluster, "get", "job", "preempted-pretrain", "-n", NAMESPACE)["metadata"]["uid"]

        assert secoctl(kube_env, "apply", str(high), "-n", NAMESPACE).returncode == 0
        drivers.append(start_driver(cluster, high, "urgent", tmp_path / "high"))
        evicted = wait_for(
            "Kueue to preempt the low-priority pretrain",
            lambda: has_condition(workload_of(cluster, "preempted-pretrain"), "Evicted"),
            timeout=90,
        )
        assert evicted["reason"] == "Preempted", evicted
        job = kube_json(cluster, "get", "job", "preempted-pretrain", "-n", NAMESPACE)
        assert job["spec"]["suspend"] is True
        row = status_rows(kube_env, "preempted")["pretrain"]
        assert row["state"] == "queued" and "Preempted by Kueue" in row["reason"], row

        # The urgent experiment runs every stage to the end; then Kueue gives the GPUs back.
        output, _ = drivers[1].communicate(timeout=180)
        assert drivers[1].returncode == 0, output
        resumed = wait_for(
            "the low-priority pretrain to be readmitted",
            lambda: (lambda pods: pods if len(pods) == 2 else None)(running_pods(cluster, "preempted", "pretrain")),
            timeout=90,
        )
        job = kube_json(cluster, "get", "job", "preempted-pretrain", "-n", NAMESPACE)
        # The same Job (so the same pod template and storage tree, whose checkpoints a real part
        # resumes from) with new pods, and the preemption charged to nothing.
        assert job["metadata"]["uid"] == job_uid and job["spec"]["suspend"] is False
        assert {p["metadata"]["uid"] for p in resumed}.isdisjoint(p["metadata"]["uid"] for p in first)
        assert job["status"].get("failed", 0) == 0 and not has_condition(job, "Failed")
        release(cluster, "preempted", "pretrain")
        wait_for(
            "the resumed pretrain to complete",
            lambda: has_condition(kube_json(cluster, "get", "job", "preempted-pretrain", "-n", NAMESPACE), "Complete"),
            timeout=60,
        )
        status = kube_json(cluster, "get", "job", "preempted-pretrain", "-n", NAMESPACE)["status"]
        assert status["succeeded"] == 2 and status.get("failed", 0) == 0
