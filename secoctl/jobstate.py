"""What a stage's Job and its pods say, in the words a person needs. Pure: API objects in, facts out.

Reasons are the ones that send someone to fix something: a pod the scheduler cannot place
(Unschedulable, with the scheduler's message), an image that cannot be pulled, a container killed
for memory, a crash loop, a part that exited non-zero, and the Job's own failure reason
(BackoffLimitExceeded, FailedIndexes, PodFailurePolicy, DeadlineExceeded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
WAITING_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                   "CreateContainerConfigError", "CreateContainerError")


@dataclass(frozen=True)
class JobFacts:
    state: str  # waiting (no Job, or not started yet) | suspended (queued in Kueue) | pending | running | complete | failed
    active: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0
    restarts: int = 0
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pods_text(self) -> str:
        return f"{self.ready}/{self.active} ready, {self.succeeded} succeeded, {self.failed} failed"


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind and item.get("status") == "True":
            return item
    return None


def pod_reasons(pod: dict[str, Any]) -> list[str]:
    name = (pod.get("metadata") or {}).get("labels", {}).get(INDEX_LABEL)
    where = f"part {name}" if name is not None else pod["metadata"]["name"]
    status = pod.get("status") or {}
    found = []
    for item in status.get("conditions") or []:
        if item.get("type") == "PodScheduled" and item.get("status") == "False" and item.get("reason"):
            found.append(f"{item['reason']}: {item.get('message', '')}".strip())
    for container in status.get("containerStatuses") or []:
        for state in (container.get("state") or {}, container.get("lastState") or {}):
            waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
            if waiting.get("reason") in WAITING_REASONS:
                found.append(f"{waiting['reason']} ({where}): {waiting.get('message', '')}".rstrip(": "))
            if terminated.get("reason") == "OOMKilled":
                found.append(f"OOMKilled ({where}): raise the stage's resources.memory")
            elif terminated.get("exitCode"):
                found.append(f"{where} exited with code {terminated['exitCode']}"
                             + (f" ({terminated['reason']})" if terminated.get("reason") else ""))
    return found


def owned_by(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods this Job made: a stage Job deleted and made anew may leave its old pods behind."""
    if job is None:
        return pods
    uid = job["metadata"]["uid"]
    return [p for p in pods if any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])]


def job_facts(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> JobFacts:
    if job is None:
        return JobFacts("waiting")
    status = job.get("status") or {}
    reasons: list[str] = []
    failed_condition = condition(job, "Failed")
    if failed_condition:
        reasons.append(f"{failed_condition.get('reason', 'Failed')}: {failed_condition.get('message', '')}".strip())
    for pod in pods:
        for reason in pod_reasons(pod):
            if reason not in reasons:
                reasons.append(reason)
    restarts = sum(c.get("restartCount", 0) for p in pods for c in (p.get("status") or {}).get("containerStatuses") or [])
    pending = any((p.get("status") or {}).get("phase") == "Pending" for p in pods)
    if condition(job, "Complete"):
        state = "complete"
    elif failed_condition:
        state = "failed"
    elif (job.get("spec") or {}).get("suspend") and KUEUE_QUEUE_LABEL in (job["metadata"].get("labels") or {}):
        state = "suspended"
        reasons.append("Suspended: waiting for the queue (Kueue) to admit the Job")
    elif (job.get("spec") or {}).get("suspend"):
        state = "waiting"  # created by apply; the driver starts it in its turn
    elif pending or not status.get("active"):
        state = "pending"
    else:
        state = "running"
    return JobFacts(state, status.get("active", 0), status.get("ready", 0), status.get("succeeded", 0),
                    status.get("failed", 0), restarts, tuple(reasons))
