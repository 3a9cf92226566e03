"""The Kubernetes executor against a real apiserver, controller-manager, scheduler and kwok nodes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from secoctl import render, store
from secoctl.tree import experiment_uri
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
    stored_stage_tree,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
STAGES = ("collect", "shards", "pretrain", "evaluate", "publish")


def objects_of(cluster, experiment: str) -> list[str]:
    listing = cluster.kubectl(
        "get",
        "configmap,serviceaccount,role,rolebinding,service,networkpolicy,job",
        "-n",
        NAMESPACE,
        "-l",
        f"{render.LABEL_EXPERIMENT}={experiment}",
        "-o",
        "name",
    ).stdout
    return sorted(listing.split())


def versions_of(cluster, experiment: str) -> dict[str, str]:
    """resourceVersion of each object; a Job's generation (its status moves on with its pods)."""
    found = {}
    for name in objects_of(cluster, experiment):
        metadata = kube_json(cluster, "get", name, "-n", NAMESPACE)["metadata"]
        found[name] = metadata["generation"] if name.startswith("job") else metadata["resourceVersion"]
    return found


def test_manifests_enforce_restricted_pods(cluster):
    namespace = kube_json(cluster, "get", "namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # The apiserver itself refuses a pod that breaks the restricted profile.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-pod", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    refused = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod), check=False)
    assert refused.returncode != 0 and 'violates PodSecurity "restricted' in refused.stderr


def with_image(example: Path, folder: Path) -> Path:
    """The example with an image of the user's own in place of the unpublished placeholder."""
    document = yaml.safe_load(example.read_text())
    spec = document["spec"]["base"] if document["kind"] == "Study" else document["spec"]
    spec["image"] = "registry.example/secoctl:test"
    if "driverImage" in spec:
        spec["driverImage"] = "registry.example/secoctl-collect:test"
    path = folder / example.name
    path.write_text(yaml.safe_dump(document))
    return path


def test_apply_refuses_the_placeholder_image_before_anything_is_sent(kube_env, cluster):
    result = secoctl(kube_env, "apply", "examples/seco-100k.yaml", "-n", NAMESPACE)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "spec.image 'ghcr.io/secoctl/secoctl:0.1.0' is a placeholder" in result.stderr
    assert "python -m images.build" in result.stderr
    assert not objects_of(cluster, "seco-rn50-100k")


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_every_example_applies_reapplies_unchanged_shows_status_and_deletes(example, kube_env, cluster, tmp_path):
    """A study's file is its variants' experiments: each is applied, and `status` and `delete` of the study's
    name reach them all."""
    from secoctl.spec.file import load_files

    name = yaml.safe_load(example.read_text())["metadata"]["name"]
    experiments = [e.name for e in load_files([example])]
    example = with_image(example, tmp_path)
    extra = ["--storage", "s3://secoctl-test/experiments"] if "quickstart" in example.name else []
    first = secoctl(kube_env, "apply", str(example), "-n", NAMESPACE, *extra)
    assert first.returncode == 0, first.stderr
    for experiment in experiments:
        assert f"job/{experiment}-driver created" in first.stdout
        assert f"configmap/{experiment}-spec created" in first.stdout
    versions = {experiment: versions_of(cluster, experiment) for experiment in experiments}
    again = secoctl(kube_env, "apply", str(example), "-n", NAMESPACE, *extra)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(" unchanged") == first.stdout.count(" created") and " configured" not in again.stdout, (
        again.stdout
    )
    assert versions == {experiment: versions_of(cluster, experiment) for experiment in experiments}
    shown = secoctl(kube_env, "status", name, "-n", NAMESPACE, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert {row["experiment"] for row in rows} == set(experiments)
    assert all(row["state"] == "waiting" for row in rows if row["stage"] == "collect")
    deleted = secoctl(kube_env, "delete", name, "-n", NAMESPACE)
    assert deleted.returncode == 0, deleted.stderr
    for experiment in experiments:
        assert f"job/{experiment}-driver deleted" in deleted.stdout
        wait_for("every labelled object to go", lambda experiment=experiment: not objects_of(cluster, experiment))


def test_apply_without_shared_storage_is_refused_before_anything_is_sent(kube_env, cluster):
    result = secoctl(kube_env, "apply", "examples/quickstart.yaml", "-n", NAMESPACE)
    assert result.returncode == 2 and "spec.storage must be an object store" in result.stderr
    assert "Traceback" not in result.stderr
    assert not objects_of(cluster, "quickstart")


def test_a_changed_spec_of_a_live_driver_names_the_immutable_field_and_the_way_out(kube_env, cluster, tmp_path):
    spec = spec_file(tmp_path / "e.yaml", "immutable", cluster.storage)
    assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
    spec_file(spec, "immutable", cluster.storage, pretrain={"maxSteps": 20})
    result = secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "spec.template" in result.stderr and "secoctl delete immutable" in result.stderr
    assert "Traceback" not in result.stderr
    assert secoctl(kube_env, "delete", "immutable", "-n", NAMESPACE).returncode == 0
    wait_for("the old driver Job to go", lambda: not objects_of(cluster, "immutable"))
    assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
    secoctl(kube_env, "delete", "immutable", "-n", NAMESPACE)


def test_a_user_bound_to_the_admins_role_can_apply_and_grant_the_driver_its_role(cluster, tmp_path):
    cluster.kubectl("create", "serviceaccount", "someone", "-n", NAMESPACE)
    cluster.kubectl(
        "create",
        "rolebinding",
        "someone-secoctl",
        "--role=secoctl-user",
        f"--serviceaccount={NAMESPACE}:someone",
        "-n",
        NAMESPACE,
    )
    config = cluster.service_account_kubeconfig(NAMESPACE, "someone", tmp_path / "user.kubeconfig")
    env = dict(os.environ, KUBECONFIG=str(config), PYTHONPATH=str(ROOT), HOME=str(tmp_path))
    spec = spec_file(tmp_path / "e.yaml", "by-a-user", cluster.storage)
    applied = secoctl(env, "apply", str(spec), "-n", NAMESPACE)
    assert applied.returncode == 0, applied.stderr
    assert secoctl(env, "status", "by-a-user", "-n", NAMESPACE).returncode == 0
    assert secoctl(env, "delete", "by-a-user", "-n", NAMESPACE).returncode == 0


def escalations(experiment: str, victim_job: str) -> dict[str, tuple[str, ...]]:
    """What the issue found a driver could do, each as a kubectl command against its own namespace."""

    def job(name: str, **pod) -> str:
        container = {
            "name": "c",
            "image": pod.pop("image", "registry.example/secoctl:test"),
            "command": ["true"],
            **pod.pop("container", {}),
        }
        return json.dumps(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container], **pod}}},
            }
        )

    return {
        "a Job as another ServiceAccount": ("create", "-f", "-", job(f"{experiment}-x", serviceAccountName="default")),
        "a Job loading another Secret": (
            "create",
            "-f",
            "-",
            job(f"{experiment}-y", container={"envFrom": [{"secretRef": {"name": "someone-elses"}}]}),
        ),
        "a Job with another image": ("create", "-f", "-", job(f"{experiment}-z", image="attacker.example/miner")),
        "a bare pod": ("run", "pod-of-the-driver", "--image=attacker.example/miner", "--restart=Never"),
        "a stage Job under its own stage's name": (
            "create",
            "job",
            f"{experiment}-collect",
            "--image=attacker.example/miner",
        ),
        "deleting another experiment's Job": ("delete", "job", victim_job),
        "starting another experiment's Job": (
            "patch",
            "job",
            victim_job,
            "--type=merge",
            "-p",
            '{"spec":{"suspend":false}}',
        ),
        "deleting its own stage Job": ("delete", "job", f"{experiment}-collect"),
        "reading a pod's log": ("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{victim_job}-0/log"),
        "reading Secrets": ("get", "secrets"),
    }


def test_the_driver_account_can_start_its_own_jobs_and_nothing_else(kube_env, cluster, tmp_path):
    spec = spec_file(tmp_path / "e.yaml", "least-privilege", cluster.storage)
    victim = spec_file(tmp_path / "v.yaml", "victim", cluster.storage)
    assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
    assert secoctl(kube_env, "apply", str(victim), "-n", NAMESPACE).returncode == 0
    config = cluster.service_account_kubeconfig(NAMESPACE, "least-privilege-driver", tmp_path / "sa.kubeconfig")

    def as_driver(*args: str, stdin: str | None = None):
        return cluster.kubectl(*args, "-n", NAMESPACE, stdin=stdin, check=False, kubeconfig_path=config)

    for what, command in escalations("least-privilege", "victim-collect").items():
        *args, stdin = command if command[-1].startswith("{") else (*command, None)
        refused = as_driver(*args, stdin=stdin)
        assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), (what, refused.stdout, refused.stderr)
    assert kube_json(cluster, "get", "job", "victim-collect", "-n", NAMESPACE)["spec"]["suspend"] is True
    # Its own stage Job: it may read and start it, but a patch cannot change what the pods run.
    assert as_driver("get", "job", "least-privilege-collect").returncode == 0
    assert as_driver("get", "pods").returncode == 0
    changed = as_driver(
        "patch",
        "job",
        "least-privilege-collect",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"attacker.example/miner"}]',
    )
    assert changed.returncode != 0 and "field is immutable" in changed.stderr, changed.stderr
    started = as_driver("patch", "job", "least-privilege-collect", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    assert started.returncode == 0, started.stderr
    for name in ("least-privilege", "victim"):
        secoctl(kube_env, "delete", name, "-n", NAMESPACE)


def test_with_a_queue_the_driver_hands_each_job_to_kueue_and_never_unsuspends_it(kube_env, cluster, tmp_path):
    spec = spec_file(tmp_path / "e.yaml", "queued", cluster.storage, queueName="gpu-queue")
    assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
    with cleaned_up(kube_env, "queued") as drivers:
        drivers.append(start_driver(cluster, spec, "queued", tmp_path))
        job = wait_for(
            "the queue label on the collect Job",
            lambda: (lambda j: j if j["metadata"]["labels"].get("kueue.x-k8s.io/queue-name") == "gpu-queue" else None)(
                kube_json(cluster, "get", "job", "queued-collect", "-n", NAMESPACE)
            ),
        )
        # No Kueue runs in this cluster (tests/cluster/test_kueue.py runs one in its own), so nothing
        # admits it: it stays suspended, with no pods, and status says Kueue has not taken it.
        assert job["spec"]["suspend"] is True and not pods_of(cluster, "queued", "collect")
        rows = status_rows(kube_env, "queued")
        assert rows["collect"]["state"] == "queued" and "Kueue has not taken the Job" in rows["collect"]["reason"]
        assert rows["pretrain"]["state"] == "waiting"


def test_the_driver_runs_every_stage_in_order_and_never_reruns_finished_ones(kube_env, cluster, tmp_path):
    spec = spec_file(tmp_path / "e.yaml", "advancing", cluster.storage)
    assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
    driver = start_driver(cluster, spec, "advancing", tmp_path)
    output, _ = driver.communicate(timeout=180)
    assert driver.returncode == 0, output
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    started = [e["stage"] for e in events if e["event"] == "stage_started"]
    assert started == list(STAGES)
    root = experiment_uri(cluster.storage.as_uri(), "advancing")
    for stage in STAGES:
        assert store.exists(stored_stage_tree(cluster.storage.as_uri(), "advancing", stage).success), stage
    jobs = {
        j["metadata"]["name"]: j["metadata"]["uid"]
        for j in kube_json(cluster, "get", "jobs", "-n", NAMESPACE, "-l", "seco.dev/experiment=advancing")["items"]
    }
    pretrain = kube_json(cluster, "get", "job", "advancing-pretrain", "-n", NAMESPACE)
    assert pretrain["spec"]["completions"] == 2 and pretrain["status"]["succeeded"] == 2
    status = status_rows(kube_env, "advancing")
    assert {stage: row["state"] for stage, row in status.items() if stage != "driver"} == dict.fromkeys(
        STAGES, "complete"
    )
    # A second driver (a restarted pod) finds every stage complete and creates nothing.
    again = start_driver(cluster, spec, "advancing", tmp_path)
    output, _ = again.communicate(timeout=60)
    assert again.returncode == 0, output
    assert output.count('"stage_skipped"') == len(STAGES) and "stage_started" not in output
    assert jobs == {
        j["metadata"]["name"]: j["metadata"]["uid"]
        for j in kube_json(cluster, "get", "jobs", "-n", NAMESPACE, "-l", "seco.dev/experiment=advancing")["items"]
    }
    secoctl(kube_env, "delete", "advancing", "-n", NAMESPACE, "--purge")
    assert not store.exists(root)


def test_a_failing_part_fails_the_stage_with_its_exit_code(kube_env, cluster, tmp_path):
    spec = spec_file(
        tmp_path / "e.yaml",
        "failing",
        cluster.storage,
        metadata={"labels": {"pod-container-running-failed.stage.kwok.x-k8s.io": "true"}},
    )
    assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
    driver = start_driver(cluster, spec, "failing", tmp_path)
    output, _ = driver.communicate(timeout=180)
    assert driver.returncode == 1, output
    failed = store.read_json(stored_stage_tree(cluster.storage.as_uri(), "failing", "collect").failed)
    assert "exited with code 1" in failed["reason"] and "FailedIndexes" in failed["reason"]
    rows = status_rows(kube_env, "failing")
    assert rows["collect"]["state"] == "failed" and "exited with code 1" in rows["collect"]["reason"]
    assert rows["pretrain"]["state"] == "waiting"
    secoctl(kube_env, "delete", "failing", "-n", NAMESPACE, "--purge")


def test_an_unschedulable_gpu_request_is_shown_as_such(kube_env, cluster, tmp_path):
    spec = spec_file(
        tmp_path / "e.yaml", "too-many-gpus", cluster.storage, pretrain={"nodes": 1, "gpusPerNode": 16, "batchSize": 32}
    )
    assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
    with cleaned_up(kube_env, "too-many-gpus") as drivers:
        drivers.append(start_driver(cluster, spec, "too-many-gpus", tmp_path))

        def pretrain_row():
            row = status_rows(kube_env, "too-many-gpus")["pretrain"]
            return row if "Unschedulable" in row["reason"] else None

        row = wait_for("pretrain to be reported unschedulable", pretrain_row, timeout=90)
        assert row["state"] == "pending" and "Insufficient nvidia.com/gpu" in row["reason"]
        table = secoctl(kube_env, "status", "too-many-gpus", "-n", NAMESPACE)
        assert "Unschedulable" in table.stdout


@pytest.mark.slow
def test_a_node_deleted_under_a_pretrain_pod_is_a_disruption_not_a_failure(kube_env, cluster, tmp_path):
    from jobs.localcloud.cluster.controlplane import GPU_NODES, node

    spec = spec_file(
        tmp_path / "e.yaml", "disrupted", cluster.storage, metadata={"labels": {"secoctl.test/hold": "true"}}
    )
    assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
    try:
        with cleaned_up(kube_env, "disrupted") as drivers:
            drivers.append(start_driver(cluster, spec, "disrupted", tmp_path))
            wait_for("collect pods", lambda: len(pods_of(cluster, "disrupted", "collect")) == 2)
            release(cluster, "disrupted", "collect")
            wait_for("shards pods", lambda: len(pods_of(cluster, "disrupted", "shards")) == 2)
            release(cluster, "disrupted", "shards")
            running = wait_for(
                "two running pretrain pods",
                lambda: (
                    [p for p in pods_of(cluster, "disrupted", "pretrain") if p["status"].get("phase") == "Running"]
                    if len(
                        [p for p in pods_of(cluster, "disrupted", "pretrain") if p["status"].get("phase") == "Running"]
                    )
                    == 2
                    else None
                ),
            )
            victim = next(
                p for p in running if p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "0"
            )
            node_name = victim["spec"]["nodeName"]
            cluster.kubectl("delete", "node", node_name)
            # The pod GC controller fails the orphaned pod with a DisruptionTarget condition; the Job replaces it.
            replaced = wait_for(
                "a replacement for pretrain pod 0",
                lambda: [
                    p
                    for p in pods_of(cluster, "disrupted", "pretrain")
                    if p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "0"
                    and p["metadata"]["uid"] != victim["metadata"]["uid"]
                ],
                timeout=120,
            )
            job = kube_json(cluster, "get", "job", "disrupted-pretrain", "-n", NAMESPACE)
            assert job["status"].get("failed", 0) == 0 and not any(
                c["type"] == "Failed" for c in job["status"].get("conditions", [])
            )
            assert replaced[0]["spec"].get("nodeName") != node_name or replaced[0]["status"].get("phase") == "Pending"
            release(cluster, "disrupted", "pretrain")
            wait_for(
                "pretrain to complete",
                lambda: any(
                    c["type"] == "Complete"
                    for c in kube_json(cluster, "get", "job", "disrupted-pretrain", "-n", NAMESPACE)["status"].get(
                        "conditions", []
                    )
                ),
                timeout=60,
            )
            assert (
                kube_json(cluster, "get", "job", "disrupted-pretrain", "-n", NAMESPACE)["status"].get("failed", 0) == 0
            )
    finally:  # the deleted node back for the tests after this one
        for name, gpus in GPU_NODES.items():
            if cluster.kubectl("get", "node", name, check=False).returncode != 0:
                cluster.kubectl("apply", "-f", "-", stdin=json.dumps(node(name, gpus)))


def test_logs_come_from_the_pods_through_the_apiserver(kube_env, cluster, tmp_path):
    # The CRI log format a kubelet keeps (and kwok serves): time, stream, tag, line.
    cluster.pod_log.write_text(
        '2026-11-24T10:00:00.000000000Z stdout F {"event": "progress", "done": 3}\n'
        "2026-11-24T10:00:01.000000000Z stdout F shard 0 committed\n"
    )
    spec = spec_file(tmp_path / "e.yaml", "logged", cluster.storage, metadata={"labels": {"secoctl.test/hold": "true"}})
    assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
    with cleaned_up(kube_env, "logged") as drivers:
        drivers.append(start_driver(cluster, spec, "logged", tmp_path))
        wait_for(
            "collect pods to run",
            lambda: [p for p in pods_of(cluster, "logged", "collect") if p["status"].get("phase") == "Running"],
        )
        result = secoctl(kube_env, "logs", "logged", "--stage", "collect", "--index", "1", "-n", NAMESPACE)
        assert result.returncode == 0, result.stderr
        assert "shard 0 committed" in result.stdout
        wrong = secoctl(kube_env, "logs", "logged", "--stage", "train", "-n", NAMESPACE)
        assert wrong.returncode == 2 and "choose one of driver, collect, shards, pretrain" in wrong.stderr


def test_logs_outlive_the_pods_read_back_from_storage(kube_env, cluster, tmp_path):
    """kwok runs no code in a pod, so each part's log is written here by the same wrapper a pod runs
    (`jobs.common.logged`, into the experiment's storage on the claimed volume); the pods are real
    ones, made by the Job controller, and then deleted."""
    import subprocess
    import sys

    cluster.pod_log.write_text("2026-11-24T10:00:00.000000000Z stdout F from the container log\n")
    spec = spec_file(tmp_path / "e.yaml", "outlived", cluster.storage)
    assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
    # Started as the driver would start it; kwok runs its pods to completion.
    cluster.kubectl(
        "patch", "job", "outlived-collect", "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    with cleaned_up(kube_env, "outlived"):
        wait_for(
            "collect to complete",
            lambda: any(
                c["type"] == "Complete"
                for c in kube_json(cluster, "get", "job", "outlived-collect", "-n", NAMESPACE)["status"].get(
                    "conditions", []
                )
            ),
            timeout=60,
        )
        for index in (0, 1):
            wrapped = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "jobs.common.logged",
                    "--spec",
                    str(spec),
                    "--stage",
                    "collect",
                    "--",
                    sys.executable,
                    "-c",
                    f"print('part {index}: 4 locations committed')",
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=60,
                env=dict(os.environ, JOB_COMPLETION_INDEX=str(index), PYTHONPATH=str(ROOT)),
            )
            assert wrapped.returncode == 0, wrapped.stderr
        live = secoctl(kube_env, "logs", "outlived", "--stage", "collect", "--index", "1", "-n", NAMESPACE)
        assert live.returncode == 0 and "from the container log" in live.stdout, live.stderr
        assert "logs from pod outlived-collect-1-" in live.stderr
        cluster.kubectl("delete", "pods", "-n", NAMESPACE, "-l", "seco.dev/experiment=outlived,seco.dev/stage=collect")
        wait_for("the pods to be gone", lambda: not pods_of(cluster, "outlived", "collect"))
        one = secoctl(kube_env, "logs", "outlived", "--stage", "collect", "--index", "1", "-n", NAMESPACE)
        assert one.returncode == 0, one.stderr
        assert one.stdout == "part 1: 4 locations committed\n"
        assert "logs from storage" in one.stderr and "its pods are gone" in one.stderr
        every = secoctl(kube_env, "logs", "outlived", "-n", NAMESPACE)  # the latest stage with a log: collect
        assert every.stdout.splitlines() == [
            "[collect/0] part 0: 4 locations committed",
            "[collect/1] part 1: 4 locations committed",
        ], every.stderr


def test_a_stage_whose_pods_a_resource_quota_refuses_says_so(kube_env, cluster, tmp_path):
    """No pod exists to carry the reason: it is the Job controller's FailedCreate warning."""
    scope = {
        "scopeSelector": {
            "matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["seco-quota-test"]}]
        }
    }
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "scheduling.k8s.io/v1",
                        "kind": "PriorityClass",
                        "metadata": {"name": "seco-quota-test"},
                        "value": 500,
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "ResourceQuota",
                        "metadata": {"name": "no-gpus-for-tests", "namespace": NAMESPACE},
                        "spec": {"hard": {"requests.nvidia.com/gpu": "0"}, **scope},
                    },
                ],
            }
        ),
    )
    spec = spec_file(tmp_path / "e.yaml", "over-quota", cluster.storage, priorityClassName="seco-quota-test")
    assert secoctl(kube_env, "apply", str(spec), "-n", NAMESPACE).returncode == 0
    cluster.kubectl(
        "patch", "job", "over-quota-pretrain", "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    try:

        def pretrain_row():
            row = status_rows(kube_env, "over-quota")["pretrain"]
            return row if "FailedCreate" in row["reason"] else None

        row = wait_for("the quota refusal in status", pretrain_row, timeout=60)
        assert row["state"] == "pending" and "exceeded quota: no-gpus-for-tests" in row["reason"], row
        assert not pods_of(cluster, "over-quota", "pretrain")
        waiting = status_rows(kube_env, "over-quota")
        assert all(r["reason"] for r in waiting.values() if r["state"] in ("waiting", "pending", "queued")), waiting
    finally:
        secoctl(kube_env, "delete", "over-quota", "-n", NAMESPACE, "--purge")
        cluster.kubectl("delete", "resourcequota", "no-gpus-for-tests", "-n", NAMESPACE, check=False)
        cluster.kubectl("delete", "priorityclass", "seco-quota-test", check=False)
