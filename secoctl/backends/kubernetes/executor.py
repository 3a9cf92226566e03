"""The Kubernetes executor: the rendered control objects, server-side applied; the driver does the rest.

`apply` sends every rendered object with field manager `secoctl`, so re-applying an unchanged
spec changes nothing: the spec's ConfigMap, the driver's ServiceAccount, Role and RoleBinding, the
rendezvous Service, the NetworkPolicies, every stage's Job (suspended) and the driver Job. The driver (`secoctl.driver`,
in the cluster) then starts each stage's Job in turn; it can create nothing. `status`, `logs` and
`delete` find everything by the experiment label.
"""

from __future__ import annotations

import json
from typing import Any

from secoctl import plan, render, stages
from secoctl.backends.kubernetes.client import ApiError, Cluster
from secoctl.backends.kubernetes.jobstate import (
    INDEX_LABEL,
    JobFacts,
    job_facts,
    owned_by,
    pending_in_queue,
    workload_of,
)
from secoctl.errors import SpecProblem, UserError, shown
from secoctl.spec import Experiment

# Kinds delete removes, Jobs first, so no pod outlives its spec.
DELETE_ORDER = ("Job", "NetworkPolicy", "Service", "RoleBinding", "Role", "ServiceAccount", "ConfigMap")
# etcd keeps one object of at most 1.5 MiB and a ConfigMap holds at most 1 MiB of data: a rendered object
# larger than 1 MiB is one the API server may refuse, so validate refuses its spec first.
MAX_OBJECT_BYTES = 2**20


def oversized(experiment: Experiment) -> list[SpecProblem]:
    """The first rendered object too large to send, as the spec's problem (every label is on every object)."""
    for obj in render.render(experiment):
        size = len(json.dumps(obj, separators=(",", ":")).encode())
        if size > MAX_OBJECT_BYTES:
            return [
                SpecProblem(
                    experiment.name,
                    "metadata",
                    f"renders {obj['kind']} {obj['metadata']['name']} of "
                    f"{size} bytes, more than the {MAX_OBJECT_BYTES} bytes one Kubernetes object may "
                    "hold; use fewer or shorter metadata.labels",
                )
            ]
    return []


def immutable_field_error(error: ApiError, obj: dict[str, Any], experiment: Experiment) -> UserError:
    causes = (error.body.get("details") or {}).get("causes") or []
    fields = sorted({c.get("field", "") for c in causes if "immutable" in c.get("message", "")}) or ["spec"]
    return UserError(
        f"{obj['kind']} {obj['metadata']['name']}: {', '.join(fields)} cannot change while the Job exists "
        f"(the spec of {experiment.name} changed since it was applied). Either `secoctl delete {experiment.name}` "
        "and apply again (completed stages keep their results in storage and are not re-run), or give the "
        "changed spec a new metadata.name"
    )


class KubernetesExecutor:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    def apply(self, experiment: Experiment) -> list[tuple[str, str, str]]:
        """Server-side apply of the control objects; returns (kind, name, created|configured|unchanged)."""
        if not experiment.spec.storage or (
            experiment.spec.storage.startswith("file://") and not experiment.spec.storage_claim
        ):
            raise UserError(
                f"{experiment.name}: spec.storage must be an object store (s3://BUCKET[/PREFIX]) or a "
                "file:// path with spec.storageClaim naming the PersistentVolumeClaim that holds it, "
                "so every pod sees the same tree"
            )
        unpublished = experiment.spec.unpublished_image()
        if unpublished:
            field, image = unpublished
            raise UserError(
                f"{experiment.name}: {field} {shown(image)} is a placeholder, not a published image; "
                "build images/secoctl/Dockerfile (or `python -m images.build` without a registry), "
                f"push it where the cluster pulls from and set {field} (images/README.md)"
            )
        results = []
        for obj in render.render(experiment, self.cluster.namespace):
            before = self.cluster.get(obj["kind"], obj["metadata"]["name"])
            if before is not None and "suspend" in obj.get("spec", {}):
                # Whether a stage Job runs is the driver's (or Kueue's) to say once the Job exists:
                # re-applying must never suspend a running stage.
                obj["spec"]["suspend"] = before["spec"].get("suspend", False)
            try:
                after = self.cluster.apply(obj)
            except ApiError as error:
                if error.status == 422 and "immutable" in str(error.body):
                    raise immutable_field_error(error, obj, experiment) from None
                if error.status == 403:
                    raise UserError(
                        f"the cluster refused {obj['kind']} {obj['metadata']['name']}: {error.line}"
                    ) from None
                raise UserError(f"{obj['kind']} {obj['metadata']['name']}: {error.line}") from None
            if before is None:
                outcome = "created"
            elif before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]:
                outcome = "unchanged"
            else:
                outcome = "configured"
            results.append((obj["kind"], obj["metadata"]["name"], outcome))
        return results

    def experiments(self) -> list[Experiment]:
        """Every experiment applied to this namespace, read back from its spec ConfigMap."""
        from secoctl.spec.file import load_documents

        found = []
        for config_map in self.cluster.list("ConfigMap", {"app.kubernetes.io/managed-by": "secoctl"}):
            document = (config_map.get("data") or {}).get("spec.yaml")
            if document:
                found.append(load_documents(document, f"configmap/{config_map['metadata']['name']}")[0])
        return sorted(found, key=lambda e: e.name)

    def waiting_reasons(self, queued: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str | None]:
        """The namespace's objects that know why a stage waits, read once for every experiment `status`
        shows: the Job controller's warnings (FailedCreate: a ResourceQuota, an admission webhook) and,
        with a queue, Kueue's Workloads (None without one). The warnings only explain: an API server
        too busy to list them (a field selector on events is not indexed, so a namespace of many
        events can time out) leaves them out, with the one line why, rather than the whole status."""
        namespace = self.cluster.namespace
        unread = None
        try:
            events = (
                self.cluster.optional_items(
                    f"/api/v1/namespaces/{namespace}/events",
                    [("fieldSelector", "involvedObject.kind=Job,type=Warning")],
                )
                or []
            )
        except (UserError, ApiError) as error:  # unreachable, or busy (429, 5xx) over every try
            events, unread = [], f"the Jobs' warning events were not read: {getattr(error, 'line', error)}"
        workloads = (
            self.cluster.optional_items(f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{namespace}/workloads")
            if queued
            else None
        )
        return events, workloads, unread

    def stage_facts(
        self, experiment: Experiment, events: list[dict[str, Any]], workloads: list[dict[str, Any]] | None
    ) -> dict[str, JobFacts]:
        jobs = {
            j["metadata"]["labels"].get(render.LABEL_STAGE): j
            for j in self.cluster.list("Job", {render.LABEL_EXPERIMENT: experiment.name})
        }
        pods = self.cluster.pods({render.LABEL_EXPERIMENT: experiment.name})
        if not experiment.spec.queue_name:
            workloads = None
        facts = {}
        for stage in [stages.DRIVER, *(s.name for s in plan.stages(experiment))]:
            job = jobs.get(stage)
            of_stage = [p for p in pods if (p["metadata"].get("labels") or {}).get(render.LABEL_STAGE) == stage]
            workload = workload_of(job, workloads) if workloads is not None else False
            place = pending_in_queue(workload, workloads) if workload else None
            facts[stage] = job_facts(job, owned_by(job, of_stage), workload, place, events)
        return facts

    def stage_pods(self, experiment: Experiment, stage: str, index: int | None) -> list[dict[str, Any]]:
        selector = {render.LABEL_EXPERIMENT: experiment.name, render.LABEL_STAGE: stage}
        if index is not None:
            selector[INDEX_LABEL] = str(index)
        pods = self.cluster.pods(selector)
        return sorted(
            pods,
            key=lambda p: (
                p["metadata"].get("labels", {}).get(INDEX_LABEL, ""),
                p["metadata"].get("creationTimestamp", ""),
            ),
        )

    def delete(self, name: str) -> list[str]:
        removed = []
        for kind in DELETE_ORDER:
            for obj in self.cluster.list(kind, {render.LABEL_EXPERIMENT: name}):
                if self.cluster.delete(kind, obj["metadata"]["name"]):
                    removed.append(f"{kind.lower()}/{obj['metadata']['name']}")
        return removed
