"""The `secoctl` command. Imports stay light (no torch, no kubernetes client) so it answers at once.

No `from __future__ import annotations` here or in weights_cli: Typer reads every command's
signature at each start-up, and string annotations would cost an eval per parameter.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from secoctl import store
from secoctl.errors import SpecError, UserError

if TYPE_CHECKING:
    from secoctl.status import StageRow

app = typer.Typer(
    name="secoctl",
    help="Seasonal Contrast pre-training of remote-sensing foundation models, as declarative experiments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

SpecFiles = Annotated[list[Path], typer.Argument(help="Experiment YAML files ('-' for stdin).", show_default=False)]
StorageOption = Annotated[
    Optional[str],
    typer.Option("--storage", show_default=False,
                 help=f"Storage tree: file:///ABSOLUTE/PATH or s3://BUCKET[/PREFIX]; default: ${store.ENV_STORAGE}, "
                      "else a folder under ~/.local/share/secoctl. A spec's own spec.storage wins; a different "
                      "--storage is refused."),
]
ContextOption = Annotated[Optional[str], typer.Option("--context", help="kubeconfig context (cluster runs).")]
NamespaceOption = Annotated[
    Optional[str], typer.Option("-n", "--namespace", help="Namespace (cluster runs); default: the context's.")]
LocalOption = Annotated[bool, typer.Option("--local", help="This machine, even if a cluster is configured.")]


def _on_cluster(local: bool) -> bool:
    """A kubeconfig, or a pod in a cluster, means the cluster unless --local says otherwise.

    Checked here, not in backends.kubernetes, so that local commands skip that module's imports
    (the spec models, the renderer, YAML).
    """
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    configured = any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p) or bool(
        os.environ.get("KUBERNETES_SERVICE_HOST"))
    return not local and configured


def _add_weights_commands() -> None:
    from secoctl.weights.cli import app as weights_app

    app.add_typer(weights_app, name="weights")


_add_weights_commands()


def _fail(lines: list[str], code: int = 2) -> None:
    for line in lines:
        typer.echo(line, err=True)
    raise typer.Exit(code)


def _load(files: list[Path]):
    """Every experiment in the files, refused whole if one is invalid or renders more than the cluster accepts;
    each one's warnings on stderr (a valid spec that will cost more than it needs to)."""
    from secoctl.spec.advice import warnings
    from secoctl.backends.kubernetes.executor import oversized
    from secoctl.spec.file import load_files

    try:
        experiments = load_files(files)
    except SpecError as error:
        _fail([str(p) for p in error.problems])
    problems = [problem for experiment in experiments for problem in oversized(experiment)]
    if problems:
        _fail([str(p) for p in problems])
    for experiment in experiments:
        for line in warnings(experiment):
            typer.echo(f"{experiment.name}: warning: {line}", err=True)
    return experiments


@app.command()
def validate(files: SpecFiles) -> None:
    """Check experiment files; every problem is printed with its field path (exit code 2)."""
    experiments = _load(files)
    for experiment in experiments:
        typer.echo(f"{experiment.name}: valid")


@app.command()
def schema() -> None:
    """Print the Experiment JSON Schema (for editors and CI)."""
    from secoctl.spec import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
def render(
    files: SpecFiles,
    output: Annotated[str, typer.Option("-o", "--output", help="yaml or json")] = "yaml",
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
) -> None:
    """Print every Kubernetes object the experiments become; talks to no cluster."""
    from secoctl.render import render as render_objects
    from secoctl.render import to_yaml

    if output not in ("yaml", "json"):
        _fail([f"--output: {output!r} is not one of yaml, json"])
    objects = [obj for experiment in _load(files) for obj in render_objects(experiment, namespace)]
    if output == "json":
        typer.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
    else:
        typer.echo(to_yaml(objects), nl=False)


@app.command()
def apply(
    files: SpecFiles,
    storage: StorageOption = None,
    local: LocalOption = False,
    context: ContextOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Run the experiments' stages in order, skipping what is complete and resuming the rest.

    With a kubeconfig (or inside a cluster) the spec's objects are applied to Kubernetes and its
    driver Job runs the stages there; otherwise, or with --local, they run on this machine.
    """
    experiments = [_on_storage(experiment, storage) for experiment in _load(files)]
    if _on_cluster(local):
        from secoctl.backends.kubernetes import commands as cluster_commands

        cluster_commands.apply(experiments, context, namespace)
        return
    from secoctl.backends.local.executor import LocalExecutor, StageFailed
    from secoctl.console import RichObserver

    with RichObserver() as observer:
        try:
            for experiment in experiments:
                observer.experiment(experiment.name, store.experiment_uri(experiment.spec.storage, experiment.name))
                with store.reported(experiment.spec.storage):  # the executor's own reads and writes of the tree
                    LocalExecutor(experiment.spec.storage, observer=observer).apply(experiment)
        except StageFailed as failure:
            observer.stop()
            if failure.message:  # a failure the part named: its cause and the field to fix, the traceback in its log
                _fail([failure.message], code=1)
            _fail([f"stage {failure.stage} failed: part {failure.index} exited with code {failure.exit_code}",
                   f"last lines of {failure.log_location}:", failure.log_tail], code=1)
        except KeyboardInterrupt:
            observer.stop()
            _fail(["interrupted; committed work is kept and `secoctl apply` resumes from it"], code=130)


def _on_storage(experiment, storage: Optional[str]):
    """The experiment on the storage `store.resolve` chooses for it, validated as spec.storage is."""
    chosen, source = store.resolve(storage, experiment.spec.storage, experiment.name)
    if chosen == experiment.spec.storage:
        return experiment
    try:
        return experiment.with_storage(chosen, source)
    except SpecError as error:
        _fail([str(p) for p in error.problems])


def _experiments(storage: str, name: str | None) -> list[str]:
    """The stored experiments' names; storage failures are left to the caller's `store.reported`."""
    names = store.list_names(store.join(storage, "experiments"))
    # The embedded default is absent until a first apply; a storage someone named is a mistake.
    if not names and storage != store.home_storage() and store.is_missing(storage):
        raise UserError(f"storage {storage} does not exist; check --storage or ${store.ENV_STORAGE}")
    if name is None:
        return names
    if name not in names:
        raise UserError(f"no experiment {name!r} in {storage}; `secoctl status --storage URI` lists them")
    return [name]


def _stored(root: str, name: str):
    """The experiment URI and the spec stored there, or a user error naming what exists."""
    from secoctl.stored import stored_experiment

    with store.reported(root):
        _experiments(root, name)
        experiment_uri = store.experiment_uri(root, name)
        return experiment_uri, stored_experiment(experiment_uri)


@app.command()
def status(
    name: Annotated[Optional[str], typer.Argument(help="One experiment; all when left out.")] = None,
    storage: StorageOption = None,
    output: Annotated[str, typer.Option("-o", "--output", help="table (one line a stage), wide or json")] = "table",
    watch: Annotated[bool, typer.Option("-w", "--watch", help="Redraw until the drivers finish (cluster).")] = False,
    local: LocalOption = False,
    context: ContextOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Where every experiment and stage stands: state, pods, progress, ETA, last metric, a collapse alarm,
    and why it is stuck."""
    if output not in ("table", "wide", "json"):
        raise UserError(f"-o/--output: {output!r} is not one of table, wide, json")
    if _on_cluster(local):
        from secoctl.backends.kubernetes import commands as cluster_commands

        cluster_commands.status(name, context, namespace, watch, output)
        return
    root = store.storage(storage)
    with store.reported(root):
        names = _experiments(root, name)
        table = _local_status_rows(root, names) if names else []
    if output == "json":
        typer.echo(json.dumps([row.__dict__ for row in table], indent=1))
    elif not table:
        typer.echo(f"no experiments in {root}")
    else:
        from secoctl.console import print_status

        print_status(table, wide=output == "wide")


def _local_status_rows(root: str, names: list[str]) -> list["StageRow"]:
    """The stored experiments' rows: the part of `status` that reads specs and needs the plan.

    A stored spec that cannot be read is that experiment's one "unreadable" row, not every experiment's
    failure; only when nothing else can be shown is it the command's one-line error.
    """
    from secoctl import plan
    from secoctl.backends.local.executor import alive_local_pids
    from secoctl.status import StageRow, rows
    from secoctl.stored import read_experiment_facts, stored_experiment

    table, unreadable = [], []
    for experiment_name in names:
        experiment_uri = store.experiment_uri(root, experiment_name)
        try:
            experiment = stored_experiment(experiment_uri)
        except (SpecError, UserError) as error:
            unreadable.append((experiment_name, error))
            continue
        if experiment is None:
            continue
        facts = read_experiment_facts(experiment_uri, experiment)
        statuses = plan.assess(experiment, facts, alive=alive_local_pids(facts, experiment_name), single_machine=True)
        table.extend(rows(experiment_name, statuses, facts))
    if unreadable and not table:
        raise unreadable[0][1]
    return table + [StageRow(experiment_name, "-", "unreadable", "", "", "", str(error).splitlines()[0],
                             summary=str(error).splitlines()[0]) for experiment_name, error in unreadable]


@app.command()
def logs(
    name: str,
    stage: Annotated[Optional[str], typer.Option("--stage", "-s")] = None,
    index: Annotated[Optional[int], typer.Option("--index", "-i", help="One part (completion index).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    storage: StorageOption = None,
    local: LocalOption = False,
    context: ContextOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Print a stage's logs (the latest stage that has any when --stage is left out)."""
    if _on_cluster(local):
        from secoctl.backends.kubernetes import commands as cluster_commands

        cluster_commands.logs(name, stage, index, follow, context, namespace)
        return
    from secoctl import partlog, plan
    from secoctl.backends.local.executor import alive_local_pids
    from secoctl.stored import read_experiment_facts
    from secoctl.tree import StageTree

    experiment_uri, experiment = _stored(store.storage(storage), name)
    stage_names = [s.name for s in plan.stages(experiment, single_machine=True)]
    if stage is not None and stage not in stage_names:
        raise UserError(f"--stage: {stage!r} is not a stage of {name}; choose one of {', '.join(stage_names)}")
    with_logs = [s for s in stage_names if store.list_names(StageTree(experiment_uri, s).path("logs"))]
    chosen = stage or (with_logs[-1] if with_logs else None)
    if chosen is None:
        raise UserError(f"{name} has no logs yet; `secoctl apply` writes them as stages run")
    stage_uri = StageTree(experiment_uri, chosen).path()
    parts = [i for i in partlog.indexes(stage_uri) if index is None or i == index]
    offsets = dict.fromkeys(parts, 0)
    while True:
        for part in parts:
            text = partlog.read(stage_uri, part)
            chunk = text[offsets[part]:]
            offsets[part] = len(text)
            prefix = f"[{chosen}/{part}] " if len(parts) > 1 else ""
            for line in chunk.splitlines():
                typer.echo(prefix + line)
        if not follow:
            return
        facts = read_experiment_facts(experiment_uri, experiment)
        if not alive_local_pids(facts, name):
            return
        time.sleep(1)


@app.command()
def plot(
    name: str,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="PNG path; default NAME-loss.png")] = None,
    storage: StorageOption = None,
) -> None:
    """Draw a pretrain stage's smoothed loss per sub-space, its embedding std (collapse) and throughput as a PNG."""
    from secoctl.report.plots import loss_curves, parse_metrics
    from secoctl.tree import StageTree

    experiment_uri, experiment = _stored(store.storage(storage), name)
    metrics = StageTree(experiment_uri, "pretrain").path("metrics.jsonl")
    try:
        records = parse_metrics(store.read_text(metrics))
    except FileNotFoundError:
        records = []
    if not records:
        raise UserError(f"{name} has no pretrain metrics yet ({metrics}); they appear every few steps")
    path = loss_curves(records, f"{name}: pretrain loss", output or Path(f"{name}-loss.png"),
                       experiment.spec.pretrain.embedding_dim)
    typer.echo(str(path))


@app.command()
def delete(
    name: str,
    purge: Annotated[bool, typer.Option("--purge", help="Also remove the experiment's storage tree.")] = False,
    storage: StorageOption = None,
    local: LocalOption = False,
    context: ContextOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Stop an experiment's running work; with --purge, remove its data too. Published weights stay.

    On a cluster every object labelled with the experiment goes (its Jobs, pods, spec, driver account).
    """
    if _on_cluster(local):
        from secoctl.backends.kubernetes import commands as cluster_commands

        cluster_commands.delete(name, purge, storage, context, namespace)
        return
    from secoctl.backends.local.executor import alive_local_pids
    from secoctl.stored import read_experiment_facts

    root = store.storage(storage)
    with store.reported(root):
        experiment_uri, experiment = _stored(root, name)
        facts = read_experiment_facts(experiment_uri, experiment) if experiment is not None else {}
        running = alive_local_pids(facts, name)
    for pid in running:
        os.kill(pid, signal.SIGTERM)  # the executor stops its parts as on Ctrl-C (process.terminate_as_interrupt)
        typer.echo(f"stopped the local run of {name} (process {pid})")
    if purge:
        with store.reported(root):
            store.remove(experiment_uri)
        typer.echo(f"removed {experiment_uri}")
    else:
        typer.echo(f"{name}: its data stays in {experiment_uri} (add --purge to remove it)")


@app.command()
def report(
    name: Annotated[str, typer.Argument(help="Experiment name, or a study's: a row per variant and baseline.")],
    storage: StorageOption = None,
) -> None:
    """Evaluation results of this run (or a study's variants) beside its baselines; also written as report.md and
    report.png."""
    from rich.console import Console
    from rich.table import Table

    from secoctl import report as reporting

    root = store.storage(storage)
    with store.reported(root):
        if name not in _experiments(root, None):  # a study's name: its variants' table (secoctl.report.study)
            from secoctl.report import study

            variants = study.members(root, name)
            if variants:
                study.show(root, name, variants)
                return
    experiment_uri, _ = _stored(root, name)
    report_rows = reporting.rows(reporting.read_metrics(experiment_uri))
    if not report_rows:
        raise UserError(f"{name} has no evaluation results yet; `secoctl status {name}` shows where it stands")
    table = Table("evaluation", "metric", "model", "value", "paper (value − paper)",
                  title=f"{name}: downstream evaluation")
    for row in report_rows:
        table.add_row(row.evaluation, row.metric, row.model, f"{row.value:.4f}", reporting.paper_cell(row))
    Console().print(table)
    for note in reporting.notes(report_rows):
        typer.echo(note)
    markdown_uri = store.join(experiment_uri, "evaluate", "report.md")
    store.write_text(markdown_uri, reporting.markdown(name, report_rows))
    store.write_bytes(store.join(experiment_uri, "evaluate", "report.png"), reporting.chart_png(name, report_rows))
    typer.echo(f"written: {markdown_uri} and report.png beside it")


def main() -> None:
    try:
        app()
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except SpecError as error:
        for problem in error.problems:
            typer.echo(str(problem), err=True)
        sys.exit(2)
