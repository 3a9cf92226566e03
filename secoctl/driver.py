"""`python -m secoctl.driver --spec FILE --namespace NS`: runs an experiment's stages in a cluster.

The rendered driver Job runs this under its least-privilege ServiceAccount. It uses the same plan
as the embedded executor: a stage whose `_SUCCESS` carries its fingerprint is skipped; otherwise its
Job (from `render.stage_job`) is created, or adopted if it already runs, and watched. A complete Job
is committed to storage (`index.json`, `_SUCCESS`); a failed one is recorded in `_FAILED` with the
Job's reason, and the driver exits 1. A stage Job left by an older spec is deleted and made anew.
Each event is one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from secoctl import plan, render, store
from secoctl.backends.kubernetes import ApiError, Cluster, KubernetesExecutor
from secoctl.backends.local import prepare_storage
from secoctl.errors import SpecError, UserError
from secoctl.jobstate import condition, job_facts, owned_by
from secoctl.spec import Experiment
from secoctl.specfile import load_documents, read_spec
from secoctl.tree import StageTree, commit_stage, read_facts

POLL_S = 2.0


def event(kind: str, **fields) -> None:
    print(json.dumps({"event": kind, "time": round(time.time(), 3), **fields}), flush=True)


class Driver:
    def __init__(self, experiment: Experiment, cluster: Cluster, poll_s: float = POLL_S):
        self.experiment, self.cluster, self.poll_s = experiment, cluster, poll_s
        self.executor = KubernetesExecutor(cluster)
        self.root = store.experiment_uri(experiment.spec.storage or store.default_storage(), experiment.name)

    def run(self) -> int:
        prepare_storage(self.root, self.experiment)
        for stage in plan.stages(self.experiment):
            tree = StageTree(self.root, stage.name)
            success = read_facts(tree).success
            if success and success.get("fingerprint") == stage.fingerprint:
                event("stage_skipped", stage=stage.name, reason="complete in storage")
                continue
            if not self.run_stage(stage, tree):
                return 1
        event("experiment_complete", experiment=self.experiment.name)
        return 0

    def ensure_job(self, stage: plan.Stage) -> dict:
        name = render.job_name(self.experiment, stage.name)
        job = self.cluster.get("Job", name)
        if job is not None and job["metadata"].get("annotations", {}).get(render.ANNOTATION_FINGERPRINT) != stage.fingerprint:
            event("stale_job_deleted", stage=stage.name, job=name)
            self.cluster.delete("Job", name)
            self.executor.wait_deleted("Job", name)
            job = None
        if job is None:
            job = self.cluster.apply(render.stage_job(self.experiment, stage, self.cluster.namespace))
            event("stage_started", stage=stage.name, job=name, parts=stage.parts)
        else:
            event("stage_adopted", stage=stage.name, job=name)
        return job

    def run_stage(self, stage: plan.Stage, tree: StageTree) -> bool:
        store.remove(tree.failed)
        job = self.ensure_job(stage)
        store.write_json(tree.running, {"executor": "kubernetes", "job": job["metadata"]["name"],
                                        "namespace": self.cluster.namespace, "started_at": time.time()})
        last = None
        while True:
            job = self.cluster.get("Job", job["metadata"]["name"])
            if job is None:
                raise RuntimeError(f"the Job of stage {stage.name} was deleted while the driver watched it")
            facts = job_facts(job, owned_by(job, self.executor.stage_pods(self.experiment, stage.name, None)))
            summary = (facts.state, facts.active, facts.ready, facts.succeeded, facts.failed, facts.reasons)
            if summary != last:
                event("stage_progress", stage=stage.name, state=facts.state, pods=facts.pods_text,
                      reasons=list(facts.reasons))
                last = summary
            if condition(job, "Complete"):
                missing = commit_stage(tree, stage.fingerprint, stage.parts)
                store.remove(tree.running)
                event("stage_complete", stage=stage.name, missing_parts=missing)
                return True
            if condition(job, "Failed"):
                reason = "; ".join(facts.reasons) or "the Job failed"
                store.write_json(tree.failed, {"reason": reason, "job": job["metadata"]["name"], "failed_at": time.time()})
                store.remove(tree.running)
                event("stage_failed", stage=stage.name, reason=reason)
                return False
            time.sleep(self.poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m secoctl.driver")
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--poll", type=float, default=POLL_S, help="seconds between looks at a running Job")
    args = parser.parse_args(argv)
    try:
        experiment = load_documents(read_spec(str(args.spec)), str(args.spec))[0]
        return Driver(experiment, Cluster(namespace=args.namespace), args.poll).run()
    except (UserError, SpecError, ApiError) as error:
        event("driver_error", message=str(error))
        return 2


if __name__ == "__main__":
    sys.exit(main())
