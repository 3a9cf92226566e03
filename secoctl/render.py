"""Spec -> Kubernetes objects. A pure function: `apply` is this plus a server.

`apply` creates every stage's Job, suspended, exactly as rendered here; the driver only starts each
in its turn (or, with a Kueue queue, hands it to Kueue), so what `secoctl render` prints is exactly
what reaches the cluster, and the driver's account never needs to create a pod or a Job.
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from secoctl import partlog, plan, stages
from secoctl.spec import CONTROL_NAME_SUFFIXES, Experiment, Resources
from secoctl.spec.file import spec_document

LABEL_EXPERIMENT = "seco.dev/experiment"
LABEL_STAGE = "seco.dev/stage"
# A stage Job's pod template: the plan fingerprint it runs. In the template, not the Job's metadata,
# because a template cannot change while its Job runs or after it ran (unless suspended again):
# re-applying a changed spec cannot relabel a Job's result.
ANNOTATION_FINGERPRINT = "seco.dev/fingerprint"
ANNOTATION_SPEC = "seco.dev/spec-sha256"  # the driver's pod template: the spec it drives
SPEC_MOUNT = "/etc/secoctl"
SPEC_PATH = f"{SPEC_MOUNT}/spec.yaml"
STORAGE_MOUNT_NAME = "storage"
RUN_AS_USER = 65532  # "nonroot" in distroless and our images
GPU_RESOURCE = "nvidia.com/gpu"
DRIVER_RESOURCES = Resources(cpu="100m", memory="256Mi", ephemeral_storage="1Gi")


def names(experiment: Experiment) -> dict[str, str]:
    """Its control objects' names, by role: `spec`, `driver`, `isolated`."""
    return {suffix.removeprefix("-"): f"{experiment.name}{suffix}" for suffix in CONTROL_NAME_SUFFIXES}


def job_name(experiment: Experiment, stage: str) -> str:
    return f"{experiment.name}-{stage}"


def rendezvous_name(experiment: Experiment, stage: str) -> str:
    """A distributed stage's headless Service, named as its Job: part 0's DNS name is the rendezvous."""
    return job_name(experiment, stage)


def stage_job_names(experiment: Experiment) -> list[str]:
    return [job_name(experiment, stage.name) for stage in plan.stages(experiment)]


def driver_rules(experiment: Experiment) -> list[dict[str, Any]]:
    """What the experiment's driver may do, and nothing more: no create, no delete, no other Job."""
    return [
        # Its own stage Jobs, by name: read one; patch one to start it (`spec.suspend: false`) or
        # to hand it to Kueue (the queue-name label).
        {
            "apiGroups": ["batch"],
            "resources": ["jobs"],
            "resourceNames": stage_job_names(experiment),
            "verbs": ["get", "patch"],
        },
        # Pods, to name why a part failed (exit code, OOMKilled, Unschedulable): only a pod's status
        # says so. `list` cannot be narrowed by name; it reads pod objects, never Secrets or logs.
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]


def labels(experiment: Experiment, stage: str | None = None) -> dict[str, str]:
    result = {
        "app.kubernetes.io/name": "secoctl",
        "app.kubernetes.io/managed-by": "secoctl",
        LABEL_EXPERIMENT: experiment.name,
    }
    result.update(experiment.metadata.labels)
    if stage:
        result[LABEL_STAGE] = stage
    return result


def _metadata(experiment: Experiment, name: str, namespace: str, stage: str | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(experiment, stage)}


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the embedded spec) as readable `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_BlockDumper, sort_keys=False)


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(resources: Resources, gpus: int) -> dict[str, Any]:
    requests: dict[str, Any] = {
        "cpu": resources.cpu,
        "memory": resources.memory,
        "ephemeral-storage": resources.ephemeral_storage,
    }
    limits: dict[str, Any] = {"memory": resources.memory}
    if gpus:
        requests[GPU_RESOURCE] = str(gpus)
        limits[GPU_RESOURCE] = str(gpus)
    return {"requests": requests, "limits": limits}


def _storage_env(experiment: Experiment) -> list[dict[str, Any]]:
    secret = experiment.spec.storage_secret
    return [{"secretRef": {"name": secret.secret_name}}] if secret else []


def _storage_volume(experiment: Experiment) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A file:// storage tree is shared through a PersistentVolumeClaim mounted at the same path."""
    claim = experiment.spec.storage_claim
    storage = experiment.spec.storage or ""
    if not claim or not storage.startswith("file://"):
        return [], []
    path = storage.removeprefix("file://") or "/"
    return (
        [{"name": STORAGE_MOUNT_NAME, "persistentVolumeClaim": {"claimName": claim}}],
        [{"name": STORAGE_MOUNT_NAME, "mountPath": path}],
    )


def _pod_template(
    experiment: Experiment,
    stage: str,
    argv: list[str],
    resources: Resources,
    *,
    gpus: int = 0,
    image: str,
    shared_memory: bool = False,
    service_account: str | None = None,
    extra_env: tuple[dict[str, Any], ...] = (),
    extra_volumes: tuple[stages.Volume, ...] = (),
    subdomain: str | None = None,
    stop_grace_s: int | None = None,
) -> dict[str, Any]:
    storage_volumes, storage_mounts = _storage_volume(experiment)
    volumes: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {"name": names(experiment)["spec"]}},
        {"name": "tmp", "emptyDir": {"sizeLimit": resources.ephemeral_storage}},
        *storage_volumes,
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        *storage_mounts,
    ]
    if shared_memory:
        # DataLoader workers pass batches through /dev/shm; the container default is 64 MiB.
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": resources.memory}})
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    for volume in extra_volumes:
        volumes.append({"name": volume.name, **volume.source})
        mounts.append({"name": volume.name, "mountPath": volume.mount_path})
    container: dict[str, Any] = {
        "name": stage,
        "image": image,
        # Always by default (checkov CKV_K8S_15): every pod start resolves the tag at the registry (layers
        # stay cached), so a moved tag reaches every node alike and a pod cannot run a private image that
        # another pod's credentials pulled. An image loaded without a registry needs IfNotPresent or Never.
        "imagePullPolicy": experiment.spec.image_pull_policy,
        "command": argv,
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            *extra_env,
        ],
        "resources": _resources(resources, gpus),
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    env_from = _storage_env(experiment)
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": service_account is not None,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if subdomain:
        pod_spec["subdomain"] = subdomain
    if stop_grace_s is not None:
        pod_spec["terminationGracePeriodSeconds"] = stop_grace_s
    if resources.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(resources.node_selector.items()))
    if resources.tolerations:
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in resources.tolerations]
    if experiment.spec.priority_class_name:
        pod_spec["priorityClassName"] = experiment.spec.priority_class_name
    return {"metadata": {"labels": labels(experiment, stage)}, "spec": pod_spec}


def _job(
    experiment: Experiment,
    namespace: str,
    stage: plan.Stage,
    template: dict[str, Any],
    *,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metadata = _metadata(experiment, job_name(experiment, stage.name), namespace, stage.name)
    template["metadata"]["annotations"] = {ANNOTATION_FINGERPRINT: stage.fingerprint}
    container = template["spec"]["containers"][0]
    container["command"] = logged(stage.name, container["command"])
    # where the wrapper writes a failure the part named; `status` reads it from the pod (jobstate)
    container["terminationMessagePath"] = partlog.TERMINATION_LOG
    container["terminationMessagePolicy"] = "File"
    parts = stage.parts
    job_spec: dict[str, Any] = {
        # Created by `apply`, started by the driver in its turn. With a Kueue queue the driver adds
        # the queue-name label instead and Kueue unsuspends the Job when it admits it.
        "suspend": True,
        "completionMode": "Indexed",
        "completions": parts,
        "parallelism": parts,
        "backoffLimit": 3 * parts,
        "template": template,
        # A node drained or preempted under a pod is not the pod's fault; nor is a pod deleted while it runs,
        # as the Job controller deletes them when Kueue suspends the Job (no DisruptionTarget then): its
        # part stops on SIGTERM and exits 143, where a kill after the grace period exits 137.
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [partlog.STOPPED_EXIT]}},
            ]
        },
    }
    job_spec.update(extra or {})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def logged(stage: str, argv: list[str]) -> list[str]:
    """A part's command run under `jobs.common.logged`, which also keeps its log in storage
    (`<stage>/logs/<index>.log`), so the log outlives the pod."""
    return [
        "python",
        "-m",
        "jobs.common.logged",
        "--spec",
        SPEC_PATH,
        "--stage",
        stage,
        "--termination-log",
        partlog.TERMINATION_LOG,
        "--",
        *argv,
    ]


def stage_job(experiment: Experiment, stage: plan.Stage, namespace: str) -> dict[str, Any]:
    """A stage's Job, from its record: every stage is an Indexed Job of its parts."""
    spec = experiment.spec
    record = stage.record
    gpus = record.gpus(spec)
    subdomain = None
    if record.distributed:
        subdomain = rendezvous_name(experiment, stage.name)
        rendezvous = f"{job_name(experiment, stage.name)}-0.{subdomain}:{plan.RENDEZVOUS_PORT}"
        argv = plan.stage_argv(
            stage,
            SPEC_PATH,
            nproc_per_node=max(gpus, 1),
            rendezvous=rendezvous,
            nodes=stage.parts,
            run_id=experiment.name,
        )
    else:
        argv = plan.stage_argv(stage, SPEC_PATH)
    template = _pod_template(
        experiment,
        stage.name,
        argv,
        record.resources(spec),
        gpus=gpus,
        image=record.image(spec),
        shared_memory=record.shared_memory,
        extra_env=record.env(spec),
        extra_volumes=record.volumes(spec),
        subdomain=subdomain,
        stop_grace_s=record.stop_grace_s(spec),
    )
    per_part = {"backoffLimit": None, "backoffLimitPerIndex": 3, "maxFailedIndexes": 0}
    return _job(experiment, namespace, stage, template, extra=per_part if record.retry_per_part else None)


def rendezvous_service(experiment: Experiment, stage: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(experiment, rendezvous_name(experiment, stage), namespace, stage),
        "spec": {
            "clusterIP": "None",
            # torchrun agents must find pod 0 before any pod is Ready.
            "publishNotReadyAddresses": True,
            "selector": {LABEL_EXPERIMENT: experiment.name, LABEL_STAGE: stage},
            "ports": [{"name": "rendezvous", "port": plan.RENDEZVOUS_PORT, "targetPort": plan.RENDEZVOUS_PORT}],
        },
    }


def network_policies(experiment: Experiment, namespace: str, distributed: list[str]) -> list[dict[str, Any]]:
    """No pod of the experiment accepts a connection, except a distributed stage's pods from each other.

    torchrun's c10d rendezvous listens on RENDEZVOUS_PORT on pod 0, and NCCL and gloo connect
    between ranks on ephemeral ports, so peers get every port; ranks exchange pickled objects, so
    nothing else may reach them. Egress stays open: storage, STAC and the apiserver.
    """
    isolated = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(experiment, names(experiment)["isolated"], namespace),
        "spec": {"podSelector": {"matchLabels": {LABEL_EXPERIMENT: experiment.name}}, "policyTypes": ["Ingress"]},
    }
    peers = []
    for stage in distributed:
        ranks = {LABEL_EXPERIMENT: experiment.name, LABEL_STAGE: stage}
        peers.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": _metadata(experiment, rendezvous_name(experiment, stage), namespace, stage),
                "spec": {
                    "podSelector": {"matchLabels": ranks},
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": ranks}}]}],
                },
            }
        )
    return [isolated, *peers]


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def render(experiment: Experiment, namespace: str = "default") -> list[dict[str, Any]]:
    """Every object `apply` sends, in the order it sends them: the stage Jobs before the driver that starts them."""
    object_names = names(experiment)
    driver = object_names["driver"]
    driver_template = _pod_template(
        experiment,
        stages.DRIVER,
        ["python", "-m", "secoctl.driver", "--spec", SPEC_PATH, "--namespace", namespace],
        DRIVER_RESOURCES,
        image=experiment.spec.driver_image or experiment.spec.image,
        service_account=driver,
    )
    planned = plan.stages(experiment)
    distributed = [stage.name for stage in planned if stage.distributed]
    document = spec_document(experiment)  # emitted once: pure-Python YAML is most of render's time
    # A changed spec changes the driver's template, which a Job never lets change: apply then says so.
    driver_template["metadata"]["annotations"] = {ANNOTATION_SPEC: hashlib.sha256(document.encode()).hexdigest()}
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(experiment, object_names["spec"], namespace),
            "data": {"spec.yaml": document},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(experiment, driver, namespace),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(experiment, driver, namespace),
            "rules": driver_rules(experiment),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(experiment, driver, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": driver},
            "subjects": [{"kind": "ServiceAccount", "name": driver, "namespace": namespace}],
        },
        *(rendezvous_service(experiment, stage, namespace) for stage in distributed),
        *network_policies(experiment, namespace, distributed),
        *(stage_job(experiment, item, namespace) for item in planned),
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _metadata(experiment, driver, namespace, stages.DRIVER),
            "spec": {"backoffLimit": 6, "template": driver_template},
        },
    ]
    return _without_none(objects)
