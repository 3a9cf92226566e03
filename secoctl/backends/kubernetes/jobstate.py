"""What a stage's Job and its pods say, in the words a person needs. Pure: API objects in, facts out.

Reasons are the ones that send someone to fix something: a pod the scheduler cannot place
(Unschedulable, with the scheduler's message), an image that cannot be pulled, a container killed
for memory, a crash loop, a part's own one-line failure or its non-zero exit, and the Job's own failure reason
(BackoffLimitExceeded, FailedIndexes, PodFailurePolicy, DeadlineExceeded).

A stage never waits without saying why: a Job queued in Kueue says its place in the LocalQueue and
Kueue's own word from the Workload (no quota, no such queue, preempted by whom); a Job whose pods
are not made says the Job controller's warning (a ResourceQuota, an admission refusal); a pod not
yet placed or started says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from secoctl import partlog
from secoctl.states import State

INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
WAITING_REASONS = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
)


@dataclass(frozen=True)
class JobFacts:
    state: State  # waiting (no Job, or not started yet) | queued (in Kueue) | pending | running | complete | failed
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
            elif named := partlog.failure_message(str(terminated.get("message") or "").strip()):
                found.append(named)  # the cause the part named, from its termination message
            elif terminated.get("exitCode"):
                found.append(
                    f"{where} exited with code {terminated['exitCode']}"
                    + (f" ({terminated['reason']})" if terminated.get("reason") else "")
                )
    return found


def workload_of(job: dict[str, Any] | None, workloads: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Kueue Workload made for this Job (Kueue owns it by the Job's uid, as the Job owns its pods)."""
    return None if job is None else next(iter(owned_by(job, workloads)), None)  # owned_by(None) keeps them all


def _any_condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def pending_in_queue(workload: dict[str, Any], workloads: list[dict[str, Any]]) -> tuple[int, int] | None:
    """(place, of how many) among the LocalQueue's workloads waiting for quota, in Kueue's order.

    Kueue takes a queue's pending workloads by priority, then by creation; BestEffortFIFO may admit a
    later, smaller one first when an earlier one does not fit, so this is the order in line, not a promise.
    """

    def waiting(w: dict[str, Any]) -> bool:
        return not condition(w, "QuotaReserved") and not condition(w, "Finished")

    queue = (workload.get("spec") or {}).get("queueName")
    if not waiting(workload) or not queue:
        return None
    line = sorted(
        (w for w in workloads if (w.get("spec") or {}).get("queueName") == queue and waiting(w)),
        key=lambda w: (
            -((w.get("spec") or {}).get("priority") or 0),
            w["metadata"].get("creationTimestamp", ""),
            w["metadata"]["name"],
        ),
    )
    names = [w["metadata"]["name"] for w in line]
    return (
        (names.index(workload["metadata"]["name"]) + 1, len(names)) if workload["metadata"]["name"] in names else None
    )


def queue_reasons(
    job: dict[str, Any], workload: dict[str, Any] | None | bool, place: tuple[int, int] | None
) -> list[str]:
    """Why a Job handed to Kueue is not running, in Kueue's words (`workload` False: not looked up)."""
    queue = (job["metadata"].get("labels") or {}).get(KUEUE_QUEUE_LABEL)
    if workload is False:
        return [f"queued for LocalQueue {queue}: waiting for Kueue to admit the Job"]
    if workload is None:
        return [
            f"queued for LocalQueue {queue}: Kueue has not taken the Job yet (no Workload: is Kueue running "
            "and does it manage batch/job?)"
        ]
    where = f"LocalQueue {queue}" + (f", position {place[0]} of {place[1]}" if place else "")
    reasons = []
    evicted = condition(workload, "Evicted")
    if evicted:
        reasons.append(
            f"{evicted.get('reason', 'Evicted')} by Kueue, requeued: {evicted.get('message', '')}".rstrip(": ")
        )
    reserved = _any_condition(workload, "QuotaReserved")
    if reserved is not None and reserved.get("status") == "True":
        admitted = condition(workload, "Admitted")
        reasons.append(f"quota reserved in {where}" + ("; starting" if admitted else "; waiting for admission checks"))
    elif reserved is not None and reserved.get("message"):
        reasons.append(f"queued in {where}: {reserved['message']}")
    else:
        reasons.append(f"queued in {where}: Kueue has not evaluated it yet")
    return reasons


def job_warnings(job: dict[str, Any] | None, events: list[dict[str, Any]], limit: int = 2) -> list[str]:
    """The latest distinct Warning events of this Job (FailedCreate: a ResourceQuota, an admission refusal)."""
    if job is None:
        return []
    uid = job["metadata"]["uid"]
    mine = [e for e in events if (e.get("involvedObject") or {}).get("uid") == uid and e.get("type") == "Warning"]
    mine.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "", reverse=True)
    found: list[str] = []
    for event in mine:
        text = f"{event.get('reason', 'Warning')}: {event.get('message', '')}".strip()
        if text not in found:
            found.append(text)
    return found[:limit]


def _waiting_pod_reasons(pods: list[dict[str, Any]]) -> list[str]:
    """A pod Pending with nothing wrong yet says which step it is at."""
    found = []
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Pending":
            continue
        scheduled = _any_condition(pod, "PodScheduled")
        waiting = [(c.get("state") or {}).get("waiting") or {} for c in status.get("containerStatuses") or []]
        if scheduled is None:
            found.append("waiting for the scheduler to place the pods")
        elif scheduled.get("status") == "True":
            step = next((w.get("reason") for w in waiting if w.get("reason")), "")
            found.append(
                f"on node {(pod.get('spec') or {}).get('nodeName', '?')}: "
                + (f"{step} (pulling the image or starting the container)" if step else "starting the container")
            )
    return list(dict.fromkeys(found))


def owned_by(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods this Job made: a stage Job deleted and made anew may leave its old pods behind."""
    if job is None:
        return pods
    uid = job["metadata"]["uid"]
    return [p for p in pods if any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])]


def job_facts(
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    workload: dict[str, Any] | None | bool = False,
    place: tuple[int, int] | None = None,
    events: list[dict[str, Any]] | None = None,
) -> JobFacts:
    """`workload`: the Job's Kueue Workload, None if it has none, False if not looked up (the driver
    cannot read Workloads); `place`: its place in line; `events`: the namespace's Job warnings."""
    if job is None:
        return JobFacts("waiting", reasons=("no Job: `secoctl apply` creates every stage's Job",))
    status = job.get("status") or {}
    reasons: list[str] = []
    failed_condition = condition(job, "Failed")
    if failed_condition:
        reasons.append(f"{failed_condition.get('reason', 'Failed')}: {failed_condition.get('message', '')}".strip())
    for pod in pods:
        for reason in pod_reasons(pod):
            if reason not in reasons:
                reasons.append(reason)
    restarts = sum(
        c.get("restartCount", 0) for p in pods for c in (p.get("status") or {}).get("containerStatuses") or []
    )
    pending = any((p.get("status") or {}).get("phase") == "Pending" for p in pods)
    state: State
    if condition(job, "Complete"):
        state = "complete"
    elif failed_condition:
        state = "failed"
    elif (job.get("spec") or {}).get("suspend") and KUEUE_QUEUE_LABEL in (job["metadata"].get("labels") or {}):
        state = "queued"
        reasons.extend(queue_reasons(job, workload, place))
    elif (job.get("spec") or {}).get("suspend"):
        state = "waiting"  # created by apply; the driver starts it in its turn
        reasons.append("not started: the driver starts it when the stages before it are complete")
    elif pending or not status.get("active"):
        state = "pending"
    else:
        state = "running"
    if state in ("pending", "running", "queued"):
        reasons.extend(r for r in job_warnings(job, events or []) if r not in reasons)
    if state == "pending" and not reasons:
        reasons.extend(
            _waiting_pod_reasons(pods)
            if pods
            else ["no pods yet: the Job controller has not created them (no warning from it so far)"]
        )
    return JobFacts(
        state,
        status.get("active", 0),
        status.get("ready", 0),
        status.get("succeeded", 0),
        status.get("failed", 0),
        restarts,
        tuple(reasons),
    )
