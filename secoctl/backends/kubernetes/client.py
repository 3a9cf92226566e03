"""The Kubernetes API as secoctl speaks to it: one namespace through the kubernetes client's REST layer, every
request bounded in time and retried boundedly. The kubernetes client is imported here only, so the CLI stays
fast without a cluster.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

from secoctl.errors import MAX_MESSAGE_CHARS, UserError, shorten

FIELD_MANAGER = "secoctl"
# Where each kind that apply creates lives in the API, in the order apply creates them.
PATHS = {
    "ConfigMap": ("api/v1", "configmaps"),
    "ServiceAccount": ("api/v1", "serviceaccounts"),
    "Service": ("api/v1", "services"),
    "Role": ("apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "NetworkPolicy": ("apis/networking.k8s.io/v1", "networkpolicies"),
    "Job": ("apis/batch/v1", "jobs"),
}
# Every request here is safe to repeat (GET, server-side apply, merge patch, DELETE), so an API server
# that is busy (429, 5xx), resets or does not answer in REQUEST_TIMEOUT_S is asked again, REQUEST_TRIES
# times in all with jittered exponential backoff (Retry-After honoured up to BACKOFF_CAP_S): about a
# minute of an API server under load before the caller gets one line.
REQUEST_TIMEOUT_S = 30
REQUEST_TRIES = 6
BACKOFF_CAP_S = 8.0
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """The API server's refusal of one request; `line` is what a person reads: the verb, the resource, the HTTP
    status and the server's message, on one line."""

    def __init__(self, status: int, body: dict[str, Any], method: str = "", path: str = ""):
        self.status, self.body, self.method, self.path = status, body, method, path
        super().__init__(" ".join(str(body.get("message") or "").split()) or f"HTTP {status}")  # one line

    @property
    def line(self) -> str:
        what = {
            401: "not authenticated: check the kubeconfig's credentials",
            403: "forbidden: the kubeconfig's user may not do this here",
        }.get(self.status, "")
        if self.status in RETRIED_STATUSES:
            what = f"the API server stayed busy over {REQUEST_TRIES} tries"
        request = f"{self.method} {self.path}: " if self.method else ""
        return shorten(f"{request}HTTP {self.status}{f' ({what})' if what else ''}: {self}", MAX_MESSAGE_CHARS)


class ClusterUnreachable(UserError):
    """No answer from the API server after every try: refused, reset or timed out."""


def transient(error: Exception) -> bool:
    """An API server that did not answer or was busy on every try, not one that refused the request."""
    return isinstance(error, ClusterUnreachable) or (isinstance(error, ApiError) and error.status in RETRIED_STATUSES)


def _retry_after(headers: Any) -> float:
    """The seconds a 429/503 asks for (its Retry-After in seconds) within [0, BACKOFF_CAP_S]; 0 when it
    names none, a date or no finite number."""
    try:
        seconds = float((headers or {}).get("Retry-After", 0))
    except (TypeError, ValueError):
        return 0.0
    return min(max(seconds, 0.0), BACKOFF_CAP_S) if math.isfinite(seconds) else 0.0


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
                raise UserError(
                    f"cannot use the kubeconfig{f' context {context}' if context else ''}: {error}"
                ) from None
            default_namespace = (active.get("context") or {}).get("namespace", "default")
        self.namespace = namespace or default_namespace
        configuration = client.Configuration.get_default_copy()
        configuration.retries = False  # request() retries, boundedly; urllib3's own 3 would multiply its tries
        self.api = client.ApiClient(configuration)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list | None = None,
        content_type: str = "application/json",
        raw: bool = False,
    ) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        for attempt in range(REQUEST_TRIES):
            wait = min(BACKOFF_CAP_S, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
            try:
                response = self.api.call_api(
                    path,
                    method,
                    query_params=query or [],
                    body=body,
                    auth_settings=["BearerToken"],
                    header_params={"Content-Type": content_type, "Accept": "application/json"},
                    _preload_content=False,
                    _return_http_data_only=True,
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
                data = response.data.decode()
                break
            except ApiException as error:
                try:
                    details = json.loads(error.body or "{}")
                except ValueError:
                    details = {"message": str(error.body)}
                if error.status not in RETRIED_STATUSES or attempt == REQUEST_TRIES - 1:
                    raise ApiError(error.status, details if isinstance(details, dict) else {}, method, path) from None
                wait = max(wait, _retry_after(error.headers))
            except (OSError, HTTPError) as error:  # refused, reset, timed out (urllib3's are no OSError)
                if attempt == REQUEST_TRIES - 1:
                    raise ClusterUnreachable(
                        f"cannot reach the cluster at {self.api.configuration.host} "
                        f"({method} {path}, {REQUEST_TRIES} tries): {error}"
                    ) from None
            time.sleep(wait)
        if raw:
            return data
        return json.loads(data) if data else {}

    def path(self, kind: str, name: str | None = None) -> str:
        prefix, plural = PATHS[kind]
        return f"/{prefix}/namespaces/{self.namespace}/{plural}" + (f"/{name}" if name else "")

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.request(
            "PATCH",
            self.path(obj["kind"], obj["metadata"]["name"]),
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def patch(self, kind: str, name: str, change: dict[str, Any]) -> dict[str, Any]:
        return self.request(
            "PATCH",
            self.path(kind, name),
            body=change,
            query=[("fieldManager", "secoctl-driver")],
            content_type="application/merge-patch+json",
        )

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
            yield from self.request(
                "GET", f"/api/v1/namespaces/{self.namespace}/pods/{pod}/log", query=query, raw=True
            ).splitlines()
            return
        response = self.api.call_api(
            f"/api/v1/namespaces/{self.namespace}/pods/{pod}/log",
            "GET",
            query_params=query,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )
        for line in response.stream(decode_content=True):
            yield from line.decode(errors="replace").splitlines()
