"""What secoctl prints is safe whatever the storage, the cluster or the user hands it: outside text is data,
never rich markup, and no control character from it reaches a terminal (issue 40, section 1)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from secoctl import store
from secoctl.spec.file import load_documents, read_spec
from secoctl.tree import StageTree, experiment_uri
from tests.conftest import ROOT, run_cli
from tests.test_pinned_outputs import cluster_api  # noqa: F401 - the fixed namespace the pinned table shows

C0 = "".join(chr(c) for c in range(32)) + "\x7f"
C1 = "".join(chr(c) for c in range(0x80, 0xA0))
# Markup that breaks rich (a closing tag), that it would apply, and that it would swallow; every control
# character; a window title (OSC) and a screen clear (CSI); and a length no line should echo whole.
HOSTILE = [
    "[/x]",
    "[bold]bold[/bold]",
    "[k8sallowedrepos]",
    C0,
    C1,
    "\x1b]0;title\x07",
    "\x1b[2J\x1b[31mred",
    "x" * 100_000,
]
RAW = ("\x1b", "\x9b", "\x9d", "\x07")  # ESC, and the C1 CSI and OSC, and BEL that ends an OSC


def folder_name(text: str) -> str:
    """The hostile text as a file system lets a folder be named."""
    return ("exp-" + text.replace("\x00", "").replace("/", ""))[:200]


def assert_clean(result, *codes: int) -> None:
    output = result.stdout + result.stderr
    assert result.returncode in (codes or (0,)), result.stderr[-2000:]
    assert "Traceback" not in output and "MarkupError" not in output, output[-2000:]
    assert not [c for c in RAW if c in output], [c for c in RAW if c in output]


def quickstart(storage: Path, name: str = "quickstart", folder: str | None = None):
    from secoctl.stored import prepare_storage

    experiment = load_documents(read_spec(str(ROOT / "examples/quickstart.yaml")), "quickstart.yaml")[0]
    experiment = experiment.with_storage(storage.as_uri())
    root = experiment_uri(storage.as_uri(), folder or name)
    prepare_storage(root, experiment)
    return experiment, root


def tree_of(storage: Path, experiment, stage: str) -> StageTree:
    """Where the stage's files are: a dataset's tree for collect and shards, the experiment's own otherwise."""
    from secoctl import plan
    from secoctl.stored import stage_tree

    return stage_tree(storage.as_uri(), experiment.name, plan.stage(experiment, stage, single_machine=True))


def hostile_tree(storage: Path, text: str) -> None:
    """A quickstart whose every stored text is `text`: collect's failure reason, shards' progress unit and
    metrics, pretrain's log, the evaluation's key, metric and model; and a second copy under a folder of that
    name."""
    experiment, root = quickstart(storage)
    collect, shards, pretrain = (tree_of(storage, experiment, name) for name in ("collect", "shards", "pretrain"))
    store.write_json(collect.failed, {"reason": text, "failed_at": time.time()})
    store.write_json(shards.running, {"pid": 2**22 + 1, "host": text, "started_at": time.time()})
    store.write_json(
        shards.progress(0),
        {
            "done": 1,
            "total": 2,
            "unit": text,
            "updated_at": time.time(),
            "metrics": {text[:1000]: text, "loss": 1.0},
            "summed": {},
        },
    )
    store.write_text(store.join(pretrain.uri, "logs", "00000.log"), f"{text}\nsecond line {text}\n")
    key = folder_name(text)
    store.write_json(
        store.join(root, "evaluate", key, "metrics.json"),
        {"metric": text[:1000], "results": {text[:1000]: {text[:1000]: 0.5}}},
    )
    quickstart(storage, folder=folder_name(text))


@pytest.mark.parametrize("text", HOSTILE, ids=["close-tag", "bold", "swallowed", "c0", "c1", "osc", "csi", "100k"])
def test_hostile_text_in_every_printed_field_never_crashes_or_reaches_the_terminal(storage, text):
    hostile_tree(storage, text)
    argument = text.replace("\x00", "")[:20_000]  # an argument cannot hold NUL
    for args in (
        ["status"],
        ["status", "-o", "wide"],
        ["status", "quickstart"],
        ["status", folder_name(text)],
        ["logs", "quickstart", "--stage", "pretrain"],
        ["report", "quickstart"],
        ["status", argument],
        ["logs", argument],
        ["report", argument],
        ["logs", "quickstart", "-s", argument],
    ):
        result = run_cli(*args, "--local", storage=storage) if args[0] != "report" else run_cli(*args, storage=storage)
        assert_clean(result, 0, 2)
        if argument in args and argument != folder_name(text):
            assert result.returncode == 2 and len(result.stderr) < 1000, result.stderr[:300]
    table = run_cli("status", "--local", storage=storage)
    assert_clean(table)
    assert f"{folder_name(text)[:30]}" in table.stdout or not folder_name(text)[4:].isprintable()
    json_rows = json.loads(run_cli("status", "--local", "-o", "json", storage=storage).stdout)
    assert text in [row["detail"] for row in json_rows]  # -o json keeps the record as it is


def test_markup_in_outside_text_is_printed_as_it_is_and_our_colours_stay(storage):
    hostile_tree(storage, "denied by [/policy] [k8sallowedrepos] [bold]x[/bold]")
    result = run_cli("status", "--local", "-o", "wide", storage=storage, environment={"COLUMNS": "400"})
    assert_clean(result)
    assert "denied by [/policy] [k8sallowedrepos] [bold]x[/bold]" in result.stdout
    from rich.console import Console

    from secoctl.status import StageRow

    row = StageRow("e", "collect", "failed", "", "", "", "[red]x[/red]", alert="[/a]", summary="[/a]")
    console = Console(width=120, record=True, color_system="standard", force_terminal=True)
    console.print(*row.markup(row.cells(False, False), False, False))
    drawn = console.export_text(styles=True)
    assert "\x1b[31mfailed" in drawn and "\x1b[31m[/a]" in drawn  # the state's colour and the alert's red stay


def test_every_command_and_subcommand_has_help():
    """Typer reads help as rich markup; every --help is walked, the storage option's [/PREFIX] included."""
    import typer.main

    from secoctl.cli import app

    def walk(group, path):
        yield path
        for name, command in getattr(group, "commands", {}).items():
            yield from walk(command, [*path, name])

    paths = list(walk(typer.main.get_command(app), []))
    assert len(paths) > 15 and ["weights", "list"] in paths
    for path in paths:
        result = run_cli(*path, "--help", environment={"COLUMNS": "100"})
        assert_clean(result)
        assert "Usage" in result.stdout
    assert "s3://BUCKET[/PREFIX]" in run_cli("status", "--help", environment={"COLUMNS": "200"}).stdout


def test_piped_status_prints_whole_lines_and_a_terminal_keeps_the_fitted_table(storage, monkeypatch):
    import functools
    import io

    from rich.console import Console

    import secoctl.console
    from secoctl.status import StageRow

    advice = "collect part 1: STAC API http://127.0.0.1:8099 not reachable; check spec.collect.stacUrl " * 2
    experiment, _ = quickstart(storage)
    store.write_json(tree_of(storage, experiment, "collect").failed, {"reason": advice, "failed_at": time.time()})
    piped = run_cli("status", "--local", storage=storage)
    assert_clean(piped)
    assert advice.strip() in piped.stdout and max(map(len, piped.stdout.splitlines())) > 80
    fixed = run_cli("status", "--local", storage=storage, environment={"COLUMNS": "80"})
    assert max(map(len, fixed.stdout.splitlines())) <= 80  # a width someone gave is kept
    terminal = io.StringIO()
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(
        secoctl.console,
        "Console",
        functools.partial(Console, file=terminal, force_terminal=True, width=80, color_system=None),
    )
    secoctl.console.print_table([StageRow("quickstart", "collect", "failed", "", "", "", advice, summary=advice)])
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 2 and max(map(len, lines)) <= 80, lines  # one line a stage, fitted to the terminal


def test_piped_progress_lines_are_never_wrapped(capsys, monkeypatch):
    from secoctl.console import RichObserver
    from secoctl.plan import Stage
    from secoctl.tree import StageFacts

    observer = RichObserver()
    stage = Stage("collect", 1, (), "f")
    observer.stage_started(stage, 0)
    metrics = {f"metric_{n}_with_a_long_name": n for n in range(4)}
    facts = StageFacts(
        progress={0: {"done": 5, "total": 10, "unit": "locations [/x]\x1b[2J", "metrics": metrics, "updated_at": 1.0}}
    )
    observer.stage_progress(stage, facts)
    observer.stop()
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "5/10" in line)
    assert "metric_3_with_a_long_name=3" in line and len(line) > 80 and "[/x]" in line and "\x1b" not in err


HOSTILE_MARKERS = {
    "failed-list": lambda tree: store.write_json(tree.failed, [1, 2]),
    "progress-name": lambda tree: store.write_json(tree.path("progress", "abc.json"), {"done": 1, "total": 2}),
    "parts-name": lambda tree: store.write_json(tree.path("parts", "x.json"), {}),
    "progress-done": lambda tree: store.write_json(tree.progress(0), {"done": "x", "total": 2, "unit": "shards"}),
}


@pytest.mark.parametrize("marker", sorted(HOSTILE_MARKERS))
def test_a_hostile_marker_is_one_unreadable_row_and_the_rest_of_the_table_stays(storage, marker):
    quickstart(storage, "good")
    _, root = quickstart(storage, "bad")
    HOSTILE_MARKERS[marker](StageTree(root, "pretrain"))  # its own: both experiments read the same datasets
    for output in ("json", "table", "wide"):
        result = run_cli("status", "--local", "-o", output, storage=storage)
        assert_clean(result)
    table = json.loads(run_cli("status", "--local", "-o", "json", storage=storage).stdout)
    assert [(row["stage"], row["state"]) for row in table if row["experiment"] == "bad"] == [("-", "unreadable")]
    assert "pretrain" in next(row["detail"] for row in table if row["experiment"] == "bad")
    assert len([row for row in table if row["experiment"] == "good"]) == 5


def test_cluster_text_in_conditions_and_events_is_data(monkeypatch, cluster_api):
    """A Job condition and an event from the cluster, hostile, through status's table and -o wide."""
    from typer.testing import CliRunner

    from secoctl.backends.kubernetes import client
    from secoctl.cli import app

    answer = client.Cluster.request
    for text in HOSTILE:

        def request(self, method, path, body=None, query=None, content_type=None, raw=False, text=text):
            found = json.loads(json.dumps(answer(self, method, path, body, query, content_type, raw)))
            for item in found.get("items", []):
                if path.endswith("/jobs") and item["metadata"]["name"] == "quickstart-shards":
                    item["status"]["conditions"] = [
                        {"type": "Failed", "status": "True", "reason": text[:50], "message": text}
                    ]
            if path.endswith("/events"):
                found["items"].append(
                    {
                        "involvedObject": {"uid": "uid-quickstart-driver"},
                        "type": "Warning",
                        "reason": "FailedCreate",
                        "message": f"denied by [/policy] {text}",
                    }
                )
            return found

        monkeypatch.setattr(client.Cluster, "request", request)
        for output in ("table", "wide"):
            result = CliRunner().invoke(app, ["status", "-o", output], env={"NO_COLOR": "1"})
            assert result.exception is None and result.exit_code == 0, result.output[-2000:]
            assert not [c for c in RAW if c in result.output]
            assert "denied by [/policy]" in result.output
