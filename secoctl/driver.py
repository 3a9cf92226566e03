"""`python -m secoctl.driver --spec FILE --namespace NS`: runs an experiment's stages in a cluster.

The rendered driver Job runs this under its least-privilege ServiceAccount. It uses the same plan
as the embedded executor: a stage whose `_SUCCESS` carries its fingerprint is skipped; otherwise its
Job, which `apply` created suspended, is started (`spec.suspend: false`), or with `spec.queueName`
labelled with the queue so that Kueue admits and starts it, or adopted if it already runs, and
watched. The driver can create nothing: a missing stage Job, or one made for another version of
the spec, is an error naming the way out. A complete Job is committed to storage (`index.json`,
`_SUCCESS`); a failed one is recorded in `_FAILED` with the Job's reason, and the driver exits 1.
Each event is one JSON line on stdout.

What it costs the API server: one GET of the Job every `--poll` seconds. Its pods, a LIST of every
part at about 10 KB a pod, are read only while there is something to explain (parts not ready, or
failed) and then at most every POD_LOOK_S, so that many drivers on one control plane leave it able
to answer. An API server that does not answer is waited for (PATIENCE_S), not taken for the end of
the experiment.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from secoctl import claim, plan, render, store, stored
from secoctl.backends.kubernetes.client import ApiError, Cluster, ClusterUnreachable, transient
from secoctl.backends.kubernetes.executor import KubernetesExecutor
from secoctl.backends.kubernetes.jobstate import KUEUE_QUEUE_LABEL, condition, job_facts, owned_by
from secoctl.errors import SpecError, UserError
from secoctl.spec import Experiment
from secoctl.spec.file import read_experiment
from secoctl.tree import StageRun, StageTree, read_facts, stage_run

POLL_S = 2.0
POD_LOOK_S = 30.0
# Each request already tries REQUEST_TRIES times (about a minute); a driver rides out an API server that
# answers none of them for this long, then exits 2 and its pod (backoffLimit) starts it again.
PATIENCE_S = 900.0
T = TypeVar("T")


def event(kind: str, **fields) -> None:
    print(json.dumps({"event": kind, "time": round(time.time(), 3), **fields}), flush=True)


class Driver:
    def __init__(self, experiment: Experiment, cluster: Cluster, poll_s: float = POLL_S):
        self.experiment, self.cluster, self.poll_s = experiment, cluster, poll_s
        self.executor = KubernetesExecutor(cluster)
        self.storage = stored.storage_of(experiment)
        self.root = stored.experiment_location(experiment)

    def run(self) -> int:
        stored.prepare_storage(self.root, self.experiment)
        for stage in plan.stages(self.experiment):
            tree = stored.stage_tree(self.storage, self.experiment.name, stage)
            if read_facts(tree).complete_for(stage.fingerprint):
                event("stage_skipped", stage=stage.name, reason="complete in storage")
                continue
            if not self.run_shared(stage, tree):
                return 1
        event("experiment_complete", experiment=self.experiment.name)
        return 0

    def run_shared(self, stage: plan.Stage, tree: StageTree) -> bool:
        """A shared dataset's stage runs only under its claim on the storage (secoctl.claim), whichever
        namespace or machine holds it: while another owner runs it this driver leaves its own Job suspended and
        waits, then reuses the dataset, or takes over a dead owner's claim and resumes its committed parts."""
        dataset = plan.dataset_name(stage)
        if dataset is None or tree.at is None:
            return self.run_stage(stage, tree)
        mine = claim.owner(
            self.experiment.name,
            executor="kubernetes",
            namespace=self.cluster.namespace,
            job=render.job_name(self.experiment, stage.name),
        )

        def waiting(held: dict) -> None:
            event(
                "dataset_wait",
                stage=stage.name,
                dataset=dataset,
                experiment=held.get("experiment"),
                namespace=held.get("namespace"),
                message=plan.waits_for(stage, held),
            )

        with claim.claimed(tree, stage.fingerprint, mine, waiting, poll_s=self.poll_s) as owned:
            if not owned:
                event("stage_skipped", stage=stage.name, reason=f"dataset {dataset} complete in storage")
                return True
            return self.run_stage(stage, tree)

    def patiently(self, what: str, call: Callable[[], T]) -> T:
        """`call()` again, every poll, while the API server does not answer, for at most PATIENCE_S."""
        since = time.monotonic()
        while True:
            try:
                return call()
            except (ClusterUnreachable, ApiError) as error:
                waited = time.monotonic() - since
                if not transient(error) or waited + self.poll_s > PATIENCE_S:
                    raise
                event("cluster_unanswered", reading=what, waited_s=round(waited, 1), message=described(error))
                time.sleep(self.poll_s)

    def start_job(self, stage: plan.Stage) -> dict:
        name = render.job_name(self.experiment, stage.name)
        job = self.patiently(f"Job {name}", lambda: self.cluster.get("Job", name))
        again = f"`secoctl delete {self.experiment.name}` and apply again (complete stages are not re-run)"
        if job is None:
            raise UserError(f"Job {name} does not exist: `secoctl apply` creates every stage's Job; {again}")
        annotations = job["spec"]["template"]["metadata"].get("annotations") or {}
        if annotations.get(render.ANNOTATION_FINGERPRINT) != stage.fingerprint:
            raise UserError(f"Job {name} was made for another version of the spec of {self.experiment.name}; {again}")
        queue = self.experiment.spec.queue_name
        if not job["spec"].get("suspend") or (queue and job["metadata"]["labels"].get(KUEUE_QUEUE_LABEL)):
            event("stage_adopted", stage=stage.name, job=name)
            return job
        # A merge patch: sent again after no answer, it changes nothing more.
        if queue:  # Kueue admits a Job by unsuspending it; the driver never bypasses the queue.
            change = {"metadata": {"labels": {KUEUE_QUEUE_LABEL: queue}}}
        else:
            change = {"spec": {"suspend": False}}
        job = self.patiently(f"Job {name}", lambda: self.cluster.patch("Job", name, change))
        event("stage_started", stage=stage.name, job=name, parts=stage.parts, **({"queue": queue} if queue else {}))
        return job

    def run_stage(self, stage: plan.Stage, tree: StageTree) -> bool:
        name = self.start_job(stage)["metadata"]["name"]
        with stage_run(
            tree,
            {"executor": "kubernetes", "job": name, "namespace": self.cluster.namespace, "started_at": time.time()},
        ) as run:
            return self.watch(stage, name, run)

    def watch(self, stage: plan.Stage, name: str, run: StageRun) -> bool:
        """Until the Job completes (committed: True) or fails (recorded: False)."""
        last, pods, looked = None, [], float("-inf")
        while True:
            job = self.patiently(f"Job {name}", lambda: self.cluster.get("Job", name))
            if job is None:
                raise RuntimeError(f"the Job of stage {stage.name} was deleted while the driver watched it")
            failed = condition(job, "Failed")
            if not (failed or unexplained(job)):
                pods = []
            elif failed or time.monotonic() - looked >= POD_LOOK_S:
                pods = owned_by(
                    job,
                    self.patiently(
                        f"the pods of {name}", lambda: self.executor.stage_pods(self.experiment, stage.name, None)
                    ),
                )
                looked = time.monotonic()
            facts = job_facts(job, pods)
            summary = (facts.state, facts.active, facts.ready, facts.succeeded, facts.failed, facts.reasons)
            if summary != last:
                event(
                    "stage_progress",
                    stage=stage.name,
                    state=facts.state,
                    pods=facts.pods_text,
                    reasons=list(facts.reasons),
                )
                last = summary
            if condition(job, "Complete"):
                missing = run.commit(stage.fingerprint, stage.parts)
                event("stage_complete", stage=stage.name, missing_parts=missing)
                return True
            if failed:
                reason = "; ".join(facts.reasons) or "the Job failed"
                run.fail({"reason": reason, "job": name})
                event("stage_failed", stage=stage.name, reason=reason)
                return False
            time.sleep(self.poll_s)


def described(error: Exception) -> str:
    return f"the API server answered {error.status}: {error}" if isinstance(error, ApiError) else str(error)


def unexplained(job: dict) -> bool:
    """Whether the Job's own counts leave something its pods would explain: parts not ready, or failed."""
    status = job.get("status") or {}
    if condition(job, "Complete") or job["spec"].get("suspend"):
        return False
    return bool(status.get("failed")) or status.get("ready", 0) < status.get("active", 0) or not status.get("active")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m secoctl.driver")
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--poll", type=float, default=POLL_S, help="seconds between looks at a running Job")
    args = parser.parse_args(argv)
    store.use_timeouts(store.DATA_PLANE)  # a long-running watcher rides out a slow store, as the stages do
    try:
        experiment = read_experiment(str(args.spec))
        return Driver(experiment, Cluster(namespace=args.namespace), args.poll).run()
    except (UserError, SpecError, ApiError) as error:
        event("driver_error", message=described(error))
        return 2
    except PermissionError as error:  # the storage as the pod's user (uid 65532) finds it: one line, not a trace
        event(
            "driver_error",
            message=f"storage refused the driver: {error}; the pods run as uid "
            f"{render.RUN_AS_USER}, so the storage must be writable by it",
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
