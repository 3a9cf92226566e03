"""The `secoctl` command: options, loading and printing. Where the work runs is a Backend's (backends/),
chosen once per command. Imports stay light (no torch, no kubernetes client) so it answers at once.

No `from __future__ import annotations` here or in weights/cli.py: Typer reads every command's
signature at each start-up, and string annotations would cost an eval per parameter.
"""

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from secoctl import store
from secoctl.backends import choose
from secoctl.errors import Failed, SpecError, UserError, shown
from secoctl.loading import fail, load, on_storage, publish_unclaimed

app = typer.Typer(
    name="secoctl",
    help="Seasonal Contrast pre-training of remote-sensing foundation models, as declarative experiments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

SpecFiles = Annotated[list[Path], typer.Argument(help="Experiment YAML files ('-' for stdin).", show_default=False)]
# Typer reads help as rich markup: the backslash keeps "[/PREFIX]" text, not a closing tag.
StorageOption = Annotated[
    Optional[str],
    typer.Option(
        "--storage",
        show_default=False,
        help=f"Storage tree: file:///ABSOLUTE/PATH or s3://BUCKET\\[/PREFIX]; default: ${store.ENV_STORAGE}, "
        "else a folder under ~/.local/share/secoctl. A spec's own spec.storage wins; a different "
        "--storage is refused.",
    ),
]
ContextOption = Annotated[Optional[str], typer.Option("--context", help="kubeconfig context (cluster runs).")]
NamespaceOption = Annotated[
    Optional[str], typer.Option("-n", "--namespace", help="Namespace (cluster runs); default: the context's.")
]
LocalOption = Annotated[bool, typer.Option("--local", help="This machine, even if a cluster is configured.")]


def _add_weights_commands() -> None:
    from secoctl.weights.cli import app as weights_app

    app.add_typer(weights_app, name="weights")


_add_weights_commands()


@app.command()
def validate(files: SpecFiles) -> None:
    """Check experiment files; every problem is printed with its field path (exit code 2)."""
    experiments = load(files)
    publish_unclaimed(experiments, local_only=True)
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
        fail([f"--output: {shown(output)} is not one of yaml, json"])
    objects = [obj for experiment in load(files) for obj in render_objects(experiment, namespace)]
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
    experiments = [on_storage(experiment, storage) for experiment in load(files)]
    publish_unclaimed(experiments, local_only=False)
    try:
        choose(local, storage, context, namespace).apply(experiments)
    except Failed as failure:
        fail(failure.lines, failure.exit_code)


@app.command()
def status(
    name: Annotated[
        Optional[str], typer.Argument(help="One experiment, or a study's experiments; all when left out.")
    ] = None,
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
        raise UserError(f"-o/--output: {shown(output)} is not one of table, wide, json")
    backend = choose(local, storage, context, namespace)
    rows = backend.rows(name)
    if output == "json":
        typer.echo(json.dumps([row.__dict__ for row in rows], indent=1))
    elif watch:
        from secoctl.console import watch as redraw

        redraw(lambda: backend.rows(name), backend.finished, backend.table, rows)
    else:
        backend.print_rows(rows, wide=output == "wide")


@app.command()
def logs(
    name: str,
    stage: Annotated[Optional[str], typer.Option("--stage", "-s")] = None,
    index: Annotated[Optional[int], typer.Option("--index", "-i", help="One part (completion index).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    output: Annotated[
        str,
        typer.Option(
            "-o", "--output", help="text (records as readable lines) or json (the records as the parts wrote them)"
        ),
    ] = "text",
    storage: StorageOption = None,
    local: LocalOption = False,
    context: ContextOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Print a stage's logs (the latest stage that has any when --stage is left out)."""
    from secoctl.partlog import log_lines

    shown = log_lines(output)
    for line in choose(local, storage, context, namespace).logs(name, stage, index, follow):
        typer.echo(shown(line))


@app.command()
def plot(
    name: str,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="PNG path; default NAME-loss.png")] = None,
    storage: StorageOption = None,
) -> None:
    """Draw a pretrain stage's smoothed loss per sub-space, its embedding std (collapse) and throughput as a PNG."""
    from secoctl.report.plots import draw_stored

    typer.echo(str(draw_stored(store.storage(storage), name, output)))


@app.command()
def delete(
    name: str,
    purge: Annotated[
        bool,
        typer.Option(
            "--purge",
            help="Also remove the experiment's storage tree, and each dataset it read that no other experiment reads.",
        ),
    ] = False,
    storage: StorageOption = None,
    local: LocalOption = False,
    context: ContextOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Stop an experiment's (or a study's experiments') running work; with --purge, remove its data too.
    Published weights stay.

    On a cluster every object labelled with the experiment goes (its Jobs, pods, spec, driver account).
    """
    from secoctl.text import safe

    for line in choose(local, storage, context, namespace).delete(name, purge):
        typer.echo(safe(line))


@app.command()
def datasets(storage: StorageOption = None) -> None:
    """List the shared datasets (collect and shards outputs, by fingerprint): size, state, the experiments
    that read each."""
    from secoctl import datasets as shared

    root = store.storage(storage)
    with store.reported(root):
        for line in shared.lines(root):
            typer.echo(line)


@app.command()
def report(
    name: Annotated[str, typer.Argument(help="Experiment name, or a study's: a row per variant and baseline.")],
    storage: StorageOption = None,
) -> None:
    """Evaluation results of this run (or a study's variants) beside its baselines; also written as report.md and
    report.png."""
    from secoctl.report.study import show_stored
    from secoctl.text import safe

    for line in show_stored(store.storage(storage), name):
        typer.echo(safe(line))


def main() -> None:
    from secoctl.text import safe

    try:
        app()
    except UserError as error:
        typer.echo(f"error: {safe(error)}", err=True)
        sys.exit(error.exit_code)
    except SpecError as error:
        for problem in error.problems:
            typer.echo(safe(problem), err=True)
        sys.exit(2)
    except Exception as error:
        # The API server's refusal (403, 401) or lasting overload (429, 5xx) is one line, not a traceback.
        # Only a cluster command has imported the client module, so no other command pays for looking.
        client = sys.modules.get("secoctl.backends.kubernetes.client")
        if client is None or not isinstance(error, client.ApiError):
            raise
        typer.echo(f"error: {safe(error.line)}", err=True)
        sys.exit(1)
