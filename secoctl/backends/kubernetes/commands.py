"""The command set against a Kubernetes cluster: apply sends the rendered objects, the in-cluster driver runs
the stages, and status, logs and delete read the cluster (and, where this machine can, the storage tree)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rich.table import Table

from secoctl import partlog, plan, stages, store, stored
from secoctl.backends.kubernetes.client import Cluster
from secoctl.backends.kubernetes.executor import KubernetesExecutor
from secoctl.backends.kubernetes.jobstate import INDEX_LABEL
from secoctl.errors import UserError, listing, shown
from secoctl.spec import Experiment
from secoctl.status import ClusterRow, cluster_rows
from secoctl.tree import experiment_uri

FINISHED = ("complete", "failed")


def named_or_study(experiments: list[Experiment], name: str) -> list[Experiment]:
    """The experiment `name`, or else every experiment of the study `name`."""
    own = [e for e in experiments if e.name == name]
    return own or [e for e in experiments if e.metadata.study is not None and e.metadata.study.name == name]


def say(line: str) -> None:
    """Where a line came from, on stderr, so that stdout holds only what was asked for."""
    import typer

    from secoctl.text import safe

    typer.echo(safe(line), err=True)


class KubernetesBackend:
    def __init__(self, context: str | None, namespace: str | None, storage: str | None):
        self.target = KubernetesExecutor(Cluster(context, namespace))
        self.storage = storage

    @property
    def namespace(self) -> str:
        return self.target.cluster.namespace

    def apply(self, experiments: Sequence[Experiment]) -> None:
        for experiment in experiments:
            for kind, name, outcome in self.target.apply(experiment):
                print(f"{kind.lower()}/{name} {outcome}")
            print(
                f"{experiment.name}: applied to namespace {self.namespace}; its driver runs the "
                f"stages. `secoctl status {experiment.name} -w` follows them."
            )

    def rows(self, name: str | None) -> list[ClusterRow]:
        experiments = self.target.experiments()
        if name is not None:
            found = experiments
            experiments = named_or_study(experiments, name)
            if not experiments:
                raise self._absent(name, found)
        rows = []
        events, workloads, unread = self.target.waiting_reasons(any(e.spec.queue_name for e in experiments))
        if unread:
            say(f"secoctl: {unread}")
        for experiment in experiments:
            jobs = self.target.stage_facts(experiment, events, workloads)
            statuses = facts = None
            try:
                facts = stored.read_experiment_facts(stored.storage_of(experiment), experiment)
                statuses = plan.assess(experiment, facts)  # on a cluster, pretrain is one part per node
            except Exception:  # noqa: BLE001 - storage this machine cannot read only hides progress columns
                pass
            rows.extend(cluster_rows(experiment.name, jobs, statuses, facts))
        return rows

    def _absent(self, name: str, found: list[Experiment]) -> UserError:
        return UserError(
            f"no experiment {shown(name)} in namespace {self.namespace}; it holds {listing([e.name for e in found])}"
        )

    def table(self, rows: list[ClusterRow]) -> Table:
        from secoctl.console import status_table

        title = f"namespace {self.namespace}" if rows else f"no experiments in namespace {self.namespace}"
        return status_table(rows, row_type=ClusterRow, fit=False, title=title)

    def print_rows(self, rows: list[ClusterRow], wide: bool) -> None:
        from rich.console import Console

        from secoctl.console import print_table, width_unknown

        if width_unknown():  # a pipe or a log: every line whole
            title = f"namespace {self.namespace}" if rows else f"no experiments in namespace {self.namespace}"
            print_table(rows, ClusterRow, fit=False, title=title)
        else:
            Console(width=200).print(self.table(rows))

    def finished(self, rows: list[ClusterRow]) -> bool:
        return all(r.state in FINISHED for r in rows if r.stage == stages.DRIVER)

    def _stage_uri(self, experiment: Experiment, stage: str) -> str:
        storage = stored.storage_of(experiment)
        return stored.stage_tree(storage, experiment.name, plan.stage(experiment, stage)).uri

    def _storage_parts(self, experiment: Experiment, stage: str, index: int | None) -> list[int]:
        """The parts of a stage whose log is in storage; none when this machine cannot read the storage."""
        if stage == stages.DRIVER:
            return []
        try:
            return [i for i in partlog.indexes(self._stage_uri(experiment, stage)) if index is None or i == index]
        except Exception:  # noqa: BLE001 - storage this machine cannot reach leaves the pods as the only source
            return []

    def _from_storage(self, experiment: Experiment, stage: str, parts: list[int], why: str) -> Iterator[str]:
        stage_uri = self._stage_uri(experiment, stage)
        say(f"secoctl: {stage} logs from storage ({stage_uri}/logs): {why}")
        for part in parts:
            yield from partlog.prefixed(stage, part, partlog.read(stage_uri, part), several=len(parts) > 1)

    def logs(self, name: str, stage: str | None, index: int | None, follow: bool) -> Iterator[str]:
        """From the pods through the apiserver while they exist; from storage (each part keeps its log
        there) once they are gone or their node cannot serve it. Which one is said on stderr."""
        found = self.target.experiments()
        experiment = next((e for e in found if e.name == name), None)
        if experiment is None:
            raise self._absent(name, found)
        names = [stages.DRIVER, *(s.name for s in plan.stages(experiment))]
        if stage is not None and stage not in names:
            raise UserError(f"--stage: {shown(stage)} is not a stage of {name}; choose one of {', '.join(names)}")
        chosen = stage or next(
            (
                s
                for s in reversed(names)
                if self.target.stage_pods(experiment, s, None) or self._storage_parts(experiment, s, None)
            ),
            stages.DRIVER,
        )
        pods = self.target.stage_pods(experiment, chosen, index)
        if not pods:
            kept = self._storage_parts(experiment, chosen, index)
            if kept:
                yield from self._from_storage(experiment, chosen, kept, "its pods are gone")
                return
            raise UserError(
                f"{name} has no pods for stage {chosen}{'' if index is None else f' index {index}'} "
                "and no log of it in storage yet"
            )
        if follow:
            pods = pods[-1:]
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            prefix = f"[{pod_name}] " if len(pods) > 1 else ""
            say(f"secoctl: {chosen} logs from pod {pod_name}")
            try:
                for line in self.target.cluster.log(pod_name, follow=follow):
                    yield prefix + line
            except Exception as error:  # noqa: BLE001 - the apiserver's word on why a log is unavailable
                message = getattr(error, "body", {}).get("message", error)
                part = (pod["metadata"].get("labels") or {}).get(INDEX_LABEL)
                kept = self._storage_parts(experiment, chosen, int(part)) if part is not None else []
                if not kept:
                    raise UserError(f"cannot read the log of pod {pod_name}: {message}") from None
                yield from self._from_storage(experiment, chosen, kept, f"pod {pod_name} cannot serve it ({message})")

    def delete(self, name: str, purge: bool) -> Iterator[str]:
        """Every object labelled with the experiment (or with each experiment of the study `name`); with purge,
        its storage tree (read from its spec) too, and each dataset it read that no other stored experiment reads."""
        from secoctl import datasets

        found = self.target.experiments()
        members = named_or_study(found, name)
        for each in [e.name for e in members] or [name]:
            experiment = next((e for e in members if e.name == each), None)
            storage = store.storage(self.storage, experiment.spec.storage, each) if experiment else None
            removed = self.target.delete(each)
            if not removed:
                raise UserError(f"nothing labelled seco.dev/experiment={each} in the namespace")
            for item in removed:
                yield f"{item} deleted"
            if purge and storage:
                location = experiment_uri(storage, each)
                store.remove(location)
                yield f"removed {location}"
                yield from datasets.purge(storage, experiment)
