"""The Kubernetes executor: the rendered control objects, server-side applied; the driver does the rest.

`apply` sends every rendered object with field manager `secoctl`, so re-applying an unchanged
spec changes nothing: the spec's ConfigMap, the driver's ServiceAccount, Role and RoleBinding, the
rendezvous Service, the NetworkPolicies, every stage's Job (suspended) and the driver Job. The driver (`secoctl.driver`,
in the cluster) then starts each stage's Job in turn; it can create nothing. `status`, `logs` and
`delete` find everything by the experiment label. The kubernetes client is imported here only, so
the CLI stays fast without a cluster.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

from secoctl import plan, render, stages
from secoctl.errors import SpecProblem, UserError, shown
from secoctl.backends.kubernetes.jobstate import INDEX_LABEL, JobFacts, job_facts, owned_by, pending_in_queue, workload_of
from secoctl.spec import Experiment

FIELD_MANAGER = "secoctl"
# Kinds apply creates, in dependency order, and delete removes (Jobs first, so no pod outlives its spec).
PATHS = {
    "ConfigMap": ("api/v1", "configmaps"), "ServiceAccount": ("api/v1", "serviceaccounts"),
    "Service": ("api/v1", "services"), "Role": ("apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "NetworkPolicy": ("apis/networking.k8s.io/v1", "networkpolicies"), "Job": ("apis/batch/v1", "jobs"),
}
DELETE_ORDER = ("Job", "NetworkPolicy", "Service", "RoleBinding", "Role", "ServiceAccount", "ConfigMap")
# etcd keeps one object of at most 1.5 MiB and a ConfigMap holds at most 1 MiB of data: a rendered object
# larger than 1 MiB is one the API server may refuse, so validate refuses its spec first.
MAX_OBJECT_BYTES = 2**20
# Every request here is safe to repeat (GET, server-side apply, merge patch, DELETE), so an API server
# that is busy (429, 5xx), resets or does not answer in REQUEST_TIMEOUT_S is asked again, REQUEST_TRIES
# times in all with jittered exponential backoff (Retry-After honoured up to BACKOFF_CAP_S): about a
# minute of an API server under load, as 50 experiments' drivers on one control plane met it
# (benchmarks.scale), before the caller gets one line.
REQUEST_TIMEOUT_S = 30
REQUEST_TRIES = 6
BACKOFF_CAP_S = 8.0
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


def oversized(experiment: Experiment) -> list[SpecProblem]:
    """The first rendered object too large to send, as the spec's problem (every label is on every object)."""
    for obj in render.render(experiment):
        size = len(json.dumps(obj, separators=(",", ":")).encode())
        if size > MAX_OBJECT_BYTES:
            return [SpecProblem(experiment.name, "metadata", f"renders {obj['kind']} {obj['metadata']['name']} of "
                                f"{size} bytes, more than the {MAX_OBJECT_BYTES} bytes one Kubernetes object may "
                                "hold; use fewer or shorter metadata.labels")]
    return []


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]):
        self.status, self.body = status, body
        super().__init__(" ".join(str(body.get("message") or "").split()) or f"HTTP {status}")  # one line


class ClusterUnreachable(UserError):
    """No answer from the API server after every try: refused, reset or timed out."""


def transient(error: Exception) -> bool:
    """An API server that did not answer or was busy on every try, not one that refused the request."""
    return isinstance(error, ClusterUnreachable) or (isinstance(error, ApiError) and error.status in RETRIED_STATUSES)


def _retry_after(headers: Any) -> float:
    """The seconds a 429/503 asks for (its Retry-After in seconds), 0 when it names none or a date."""
    try:
        return max(0.0, float((headers or {}).get("Retry-After", 0)))
    except (TypeError, ValueError):
        return 0.0


class Cluster:
    """A namespace of one cluster, spoken to through the kubernetes client's REST layer."""

    def __init__(self, context: str | None = None, namespace: str | None = None):
        from kubernetes import client, config

        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            try:
                config.load_incluster_config()
            except config.ConfigException as error:  # e.g. the token volume's ca.crt empty: no root CA published
                raise UserError(f"cannot use the pod's service account: {error}") from None
            default_namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
        else:
            try:
                config.load_kube_config(context=context)
                _, active = config.list_kube_config_contexts()
            except Exception as error:  # noqa: BLE001 - the client raises several kinds for a bad kubeconfig
                raise UserError(f"cannot use the kubeconfig{f' context {context}' if context else ''}: {error}") from None
            default_namespace = (active.get("context") or {}).get("namespace", "default")
        self.namespace = namespace or default_namespace
        configuration = client.Configuration.get_default_copy()
        configuration.retries = False  # request() retries, boundedly; urllib3's own 3 would multiply its tries
        self.api = client.ApiClient(configuration)

    def request(self, method: str, path: str, body: Any = None, query: list | None = None,
                content_type: str = "application/json", raw: bool = False) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        for attempt in range(REQUEST_TRIES):
            wait = min(BACKOFF_CAP_S, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
            try:
                response = self.api.call_api(
                    path, method, query_params=query or [], body=body, auth_settings=["BearerToken"],
                    header_params={"Content-Type": content_type, "Accept": "application/json"},
                    _preload_content=False, _return_http_data_only=True, _request_timeout=REQUEST_TIMEOUT_S)
                data = response.data.decode()
                break
            except ApiException as error:
                try:
                    details = json.loads(error.body or "{}")
                except ValueError:
                    details = {"message": str(error.body)}
                if error.status not in RETRIED_STATUSES or attempt == REQUEST_TRIES - 1:
                    raise ApiError(error.status, details) from None
                wait = max(wait, min(BACKOFF_CAP_S, _retry_after(error.headers)))
            except (OSError, HTTPError) as error:  # refused, reset, timed out (urllib3's are no OSError)
                if attempt == REQUEST_TRIES - 1:
                    raise ClusterUnreachable(f"cannot reach the cluster at {self.api.configuration.host} "
                                    f"({method} {path}, {REQUEST_TRIES} tries): {error}") from None
            time.sleep(wait)
        if raw:
            return data
        return json.loads(data) if data else {}

    def path(self, kind: str, name: str | None = None) -> str:
        prefix, plural = PATHS[kind]
        return f"/{prefix}/namespaces/{self.namespace}/{plural}" + (f"/{name}" if name else "")

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", self.path(obj["kind"], obj["metadata"]["name"]), body=obj,
                            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                            content_type="application/apply-patch+yaml")

    def patch(self, kind: str, name: str, change: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", self.path(kind, name), body=change, query=[("fieldManager", "secoctl-driver")],
                            content_type="application/merge-patch+json")

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", self.path(kind, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list(self, kind: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        return self._items(self.path(kind), selector)

    def pods(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        return self._items(f"/api/v1/namespaces/{self.namespace}/pods", selector)

    def _items(self, path: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        query = [("labelSelector", ",".join(f"{k}={v}" for k, v in selector.items()))]
        return self.request("GET", path, query=query).get("items", [])

    def optional_items(self, path: str, query: list | None = None) -> list[dict[str, Any]] | None:
        """A listing that may be absent (Kueue not installed: empty) or not ours to read (403: None)."""
        try:
            return self.request("GET", path, query=query).get("items", [])
        except ApiError as error:
            if error.status in (403, 404):
                return None if error.status == 403 else []
            raise

    def delete(self, kind: str, name: str) -> bool:
        try:
            self.request("DELETE", self.path(kind, name), body={"propagationPolicy": "Background"})
            return True
        except ApiError as error:
            if error.status == 404:
                return False
            raise

    def log(self, pod: str, follow: bool = False):
        """The pod's log, streamed line by line when following."""
        query = [("follow", "true")] if follow else []
        if not follow:
            yield from self.request("GET", f"/api/v1/namespaces/{self.namespace}/pods/{pod}/log", query=query,
                                    raw=True).splitlines()
            return
        response = self.api.call_api(f"/api/v1/namespaces/{self.namespace}/pods/{pod}/log", "GET",
                                     query_params=query, auth_settings=["BearerToken"], _preload_content=False,
                                     _return_http_data_only=True)
        for line in response.stream(decode_content=True):
            yield from line.decode(errors="replace").splitlines()


def immutable_field_error(error: ApiError, obj: dict[str, Any], experiment: Experiment) -> UserError:
    causes = (error.body.get("details") or {}).get("causes") or []
    fields = sorted({c.get("field", "") for c in causes if "immutable" in c.get("message", "")}) or ["spec"]
    return UserError(
        f"{obj['kind']} {obj['metadata']['name']}: {', '.join(fields)} cannot change while the Job exists "
        f"(the spec of {experiment.name} changed since it was applied). Either `secoctl delete {experiment.name}` "
        "and apply again (completed stages keep their results in storage and are not re-run), or give the "
        "changed spec a new metadata.name")


class KubernetesExecutor:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    def apply(self, experiment: Experiment) -> list[tuple[str, str, str]]:
        """Server-side apply of the control objects; returns (kind, name, created|configured|unchanged)."""
        if not experiment.spec.storage or (experiment.spec.storage.startswith("file://")
                                           and not experiment.spec.storage_claim):
            raise UserError(f"{experiment.name}: spec.storage must be an object store (s3://BUCKET[/PREFIX]) or a "
                            "file:// path with spec.storageClaim naming the PersistentVolumeClaim that holds it, "
                            "so every pod sees the same tree")
        unpublished = experiment.spec.unpublished_image()
        if unpublished:
            field, image = unpublished
            raise UserError(f"{experiment.name}: {field} {shown(image)} is a placeholder, not a published image; "
                            "build images/secoctl/Dockerfile (or `python -m images.build` without a registry), "
                            f"push it where the cluster pulls from and set {field} (images/README.md)")
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
                    raise UserError(f"the cluster refused {obj['kind']} {obj['metadata']['name']}: "
                                    f"{error.body.get('message', error)}") from None
                raise UserError(f"{obj['kind']} {obj['metadata']['name']}: {error.body.get('message', error)}") from None
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
        too busy to list them (a field selector on events is not indexed; 16,000 events timed out
        under benchmarks.scale) leaves them out, with the one line why, rather than the whole status."""
        namespace = self.cluster.namespace
        unread = None
        try:
            events = self.cluster.optional_items(f"/api/v1/namespaces/{namespace}/events",
                                                 [("fieldSelector", "involvedObject.kind=Job,type=Warning")]) or []
        except UserError as error:
            events, unread = [], f"the Jobs' warning events were not read: {error}"
        workloads = self.cluster.optional_items(f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{namespace}/workloads") \
            if queued else None
        return events, workloads, unread

    def stage_facts(self, experiment: Experiment, events: list[dict[str, Any]],
                    workloads: list[dict[str, Any]] | None) -> dict[str, JobFacts]:
        jobs = {j["metadata"]["labels"].get(render.LABEL_STAGE): j
                for j in self.cluster.list("Job", {render.LABEL_EXPERIMENT: experiment.name})}
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
        return sorted(pods, key=lambda p: (p["metadata"].get("labels", {}).get(INDEX_LABEL, ""),
                                           p["metadata"].get("creationTimestamp", "")))

    def delete(self, name: str) -> list[str]:
        removed = []
        for kind in DELETE_ORDER:
            for obj in self.cluster.list(kind, {render.LABEL_EXPERIMENT: name}):
                if self.cluster.delete(kind, obj["metadata"]["name"]):
                    removed.append(f"{kind.lower()}/{obj['metadata']['name']}")
        return removed
