"""apply, status, logs and delete against a Kubernetes cluster (the CLI's other half, imported lazily)."""

from __future__ import annotations

import json
import time

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from secoctl import partlog, plan, stages, store, stored
from secoctl.backends.kubernetes.executor import Cluster, KubernetesExecutor
from secoctl.errors import UserError
from secoctl.backends.kubernetes.jobstate import INDEX_LABEL
from secoctl.states import styled
from secoctl.status import ClusterRow, cluster_rows

FINISHED = ("complete", "failed")


def executor(context: str | None, namespace: str | None) -> KubernetesExecutor:
    return KubernetesExecutor(Cluster(context, namespace))


def apply(experiments, context: str | None, namespace: str | None) -> None:
    target = executor(context, namespace)
    for experiment in experiments:
        for kind, name, outcome in target.apply(experiment):
            typer.echo(f"{kind.lower()}/{name} {outcome}")
        typer.echo(f"{experiment.name}: applied to namespace {target.cluster.namespace}; its driver runs the "
                   f"stages. `secoctl status {experiment.name} -w` follows them.")


def _rows(target: KubernetesExecutor, name: str | None) -> list[ClusterRow]:
    experiments = target.experiments()
    if name is not None:
        experiments = [e for e in experiments if e.name == name]
        if not experiments:
            raise UserError(f"no experiment {name!r} in namespace {target.cluster.namespace}; "
                            "`secoctl status` lists them")
    rows = []
    events, workloads, unread = target.waiting_reasons(any(e.spec.queue_name for e in experiments))
    if unread:
        typer.echo(f"secoctl: {unread}", err=True)
    for experiment in experiments:
        jobs = target.stage_facts(experiment, events, workloads)
        statuses = facts = None
        try:
            facts = stored.read_experiment_facts(stored.experiment_uri(experiment), experiment)
            statuses = plan.assess(experiment, facts)  # on a cluster, pretrain is one part per node
        except Exception:  # noqa: BLE001 - storage this machine cannot read only hides progress columns
            pass
        rows.extend(cluster_rows(experiment.name, jobs, statuses, facts))
    return rows


def _table(rows: list[ClusterRow], namespace: str) -> Table:
    table = Table("EXPERIMENT", "STAGE", "STATE", "PODS", "RESTARTS", "PROGRESS", "ETA", "METRIC", "REASON", box=None,
                  title=f"namespace {namespace}" if rows else f"no experiments in namespace {namespace}")
    for row in rows:
        table.add_row(row.experiment, row.stage, styled(row.state), row.pods, str(row.restarts), row.progress,
                      row.eta, " ".join(filter(None, (row.alert, row.metric))), row.reason)
    return table


def status(name: str | None, context: str | None, namespace: str | None, watch: bool, output: str) -> None:
    target = executor(context, namespace)
    rows = _rows(target, name)
    if output == "json":
        typer.echo(json.dumps([row.__dict__ for row in rows], indent=1))
        return
    if not watch:
        Console(width=200).print(_table(rows, target.cluster.namespace))
        return
    with Live(_table(rows, target.cluster.namespace), refresh_per_second=1) as live:
        while not all(r.state in FINISHED for r in rows if r.stage == stages.DRIVER):
            time.sleep(2)
            rows = _rows(target, name)
            live.update(_table(rows, target.cluster.namespace))


def _stage_uri(experiment, stage: str) -> str:
    return store.join(stored.experiment_uri(experiment), stage)


def _storage_parts(experiment, stage: str, index: int | None) -> list[int]:
    """The parts of a stage whose log is in storage; none when this machine cannot read the storage."""
    if stage == stages.DRIVER:
        return []
    try:
        return [i for i in partlog.indexes(_stage_uri(experiment, stage)) if index is None or i == index]
    except Exception:  # noqa: BLE001 - storage this machine cannot reach leaves the pods as the only source
        return []


def _echo_storage(experiment, stage: str, parts: list[int], why: str) -> None:
    stage_uri = _stage_uri(experiment, stage)
    typer.echo(f"secoctl: {stage} logs from storage ({stage_uri}/logs): {why}", err=True)
    for part in parts:
        prefix = f"[{stage}/{part}] " if len(parts) > 1 else ""
        for line in partlog.read(stage_uri, part).splitlines():
            typer.echo(prefix + line)


def logs(name: str, stage: str | None, index: int | None, follow: bool, context: str | None,
         namespace: str | None) -> None:
    """From the pods through the apiserver while they exist; from storage (each part keeps its log
    there) once they are gone or their node cannot serve it. Which one is said on stderr."""
    target = executor(context, namespace)
    experiment = next((e for e in target.experiments() if e.name == name), None)
    if experiment is None:
        raise UserError(f"no experiment {name!r} in namespace {target.cluster.namespace}")
    names = [stages.DRIVER, *(s.name for s in plan.stages(experiment))]
    if stage is not None and stage not in names:
        raise UserError(f"--stage: {stage!r} is not a stage of {name}; choose one of {', '.join(names)}")
    chosen = stage or next((s for s in reversed(names) if target.stage_pods(experiment, s, None)
                            or _storage_parts(experiment, s, None)), stages.DRIVER)
    pods = target.stage_pods(experiment, chosen, index)
    if not pods:
        stored = _storage_parts(experiment, chosen, index)
        if stored:
            _echo_storage(experiment, chosen, stored, "its pods are gone")
            return
        raise UserError(f"{name} has no pods for stage {chosen}{'' if index is None else f' index {index}'} "
                        "and no log of it in storage yet")
    if follow:
        pods = pods[-1:]
    for pod in pods:
        pod_name = pod["metadata"]["name"]
        prefix = f"[{pod_name}] " if len(pods) > 1 else ""
        typer.echo(f"secoctl: {chosen} logs from pod {pod_name}", err=True)
        try:
            for line in target.cluster.log(pod_name, follow=follow):
                typer.echo(prefix + line)
        except Exception as error:  # noqa: BLE001 - the apiserver's word on why a log is unavailable
            message = getattr(error, "body", {}).get("message", error)
            part = (pod["metadata"].get("labels") or {}).get(INDEX_LABEL)
            stored = _storage_parts(experiment, chosen, int(part)) if part is not None else []
            if not stored:
                raise UserError(f"cannot read the log of pod {pod_name}: {message}") from None
            _echo_storage(experiment, chosen, stored, f"pod {pod_name} cannot serve it ({message})")


def delete(name: str, purge: bool, storage: str | None, context: str | None, namespace: str | None) -> None:
    """Every object labelled with the experiment; with purge, its storage tree (read from its spec) too."""
    target = executor(context, namespace)
    experiment_uri = None
    if purge:
        found = {e.name: e for e in target.experiments()}
        if name in found:
            experiment_uri = store.experiment_uri(store.storage(storage, found[name].spec.storage, name), name)
    removed = target.delete(name)
    if not removed:
        raise UserError(f"nothing labelled seco.dev/experiment={name} in the namespace")
    for item in removed:
        typer.echo(f"{item} deleted")
    if experiment_uri:
        store.remove(experiment_uri)
        typer.echo(f"removed {experiment_uri}")
