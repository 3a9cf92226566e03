"""Errors are one bounded line each, never a traceback: a bad option, a spec's control characters, a name
that is not there, and an API server that refuses or stays busy (issue 40)."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import ROOT, run_cli
from tests.test_pinned_outputs import cluster_api  # noqa: F401 - the fixed namespace the pinned table shows

SPEC = """apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {name: mini}
spec:
"""


@pytest.mark.parametrize(
    "field,yaml_value",
    [
        ("spec.collect.stacUrl", 'collect: {stacUrl: "http://127.0.0.1:9/\\e[2J\\n[/x]"}'),
        ("spec.collect.collection", 'collect: {collection: "s2\\e]0;title\\a"}'),
        ("spec.tracking.mlflow.uri", 'tracking: {mlflow: {uri: "http://mlflow.example.org/\\e[31m"}}'),
        (
            "spec.tracking.mlflow.experiment",
            'tracking: {mlflow: {uri: "http://m.example.org", experiment: "a\\x9b2J"}}',
        ),
    ],
)
def test_free_text_spec_fields_refuse_control_characters(tmp_path, field, yaml_value):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC + f"  {yaml_value}\n")
    result = run_cli("validate", str(spec))
    assert result.returncode == 2 and "\x1b" not in result.stderr and "Traceback" not in result.stderr
    assert f"{spec}: {field}: " in result.stderr and "holds a control character" in result.stderr
    assert "remove it" in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_a_misspelt_field_is_offered_the_one_meant(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC + "  pretrain: {maxStep: 3}\n")
    result = run_cli("validate", str(spec))
    assert result.returncode == 2
    assert result.stderr == f"{spec}: spec.pretrain.maxStep: unknown field; did you mean 'maxSteps'?\n"


def test_a_long_name_is_counted_as_it_was_written(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("mini", "a" * 253) + "  {}\n")
    result = run_cli("validate", str(spec))
    assert result.returncode == 2 and "(253 characters)" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "bands,expected",
    [
        ("", "an empty band name"),
        ("B04,,B02", "an empty band name"),
        ("x" * 100_000, "is not a band"),
        ("B04," * 30_000, "more than 64 bands"),
        ("B04,B99", "B99 is not a band"),
    ],
)
def test_bands_errors_are_one_bounded_line(tmp_path, bands, expected):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    result = run_cli(
        "weights",
        "push",
        str(weights),
        "--name",
        "w",
        "--version",
        "1",
        "--bands",
        bands,
        "--storage",
        tmp_path.as_uri(),
    )
    assert result.returncode == 2 and expected in result.stderr, result.stderr[:500]
    assert len(result.stderr.splitlines()) == 1 and len(result.stderr) < 400, result.stderr[:500]
    assert "too many bands" not in result.stderr


def test_an_experiment_not_there_is_refused_with_those_that_are(storage):
    from secoctl.spec.file import load_documents, read_spec
    from secoctl.stored import prepare_storage
    from secoctl.tree import experiment_uri

    base = load_documents(read_spec(str(ROOT / "examples/quickstart.yaml")), "quickstart.yaml")[0]
    for name in ("alpha", "beta"):
        experiment = base.model_copy(update={"metadata": base.metadata.model_copy(update={"name": name})})
        prepare_storage(experiment_uri(storage.as_uri(), name), experiment.with_storage(storage.as_uri()))
    result = run_cli("status", "nosuchname", "--local", storage=storage)
    assert result.returncode == 2
    assert result.stderr == f"error: no experiment 'nosuchname' in {storage.as_uri()}; it holds alpha, beta\n"


def test_weights_of_a_storage_that_does_not_exist_is_an_error(tmp_path, storage):
    missing = run_cli("weights", "list", "--storage", (tmp_path / "typo").as_uri())
    assert (missing.returncode, missing.stdout) == (2, "")
    assert (
        missing.stderr == f"error: storage {(tmp_path / 'typo').as_uri()} does not exist; check --storage or "
        "$SECOCTL_STORAGE\n"
    )
    assert run_cli("weights", "list", "--storage", storage.as_uri()).returncode == 0


def test_the_last_shards_report_is_written_however_fast_the_stage_went(monkeypatch):
    """A throttled last report left `status` at shards=2 where 32 were written."""
    from types import SimpleNamespace

    import jobs.shards.stage as shards

    reports = []
    collected = [{"uri": f"s3://b/collect/data/{n:05d}.tar", "samples": 1, "keys": [str(n)]} for n in range(32)]
    monkeypatch.setattr(shards, "shard_entries", lambda index: collected)
    monkeypatch.setattr(shards.store, "exists", lambda uri: True)  # every shard converted by an earlier run
    part = SimpleNamespace(
        index=0,
        parts=1,
        input_index=lambda stage: "index.json",
        experiment=SimpleNamespace(spec=SimpleNamespace(input_bands=lambda: ["B04"])),
        tree=SimpleNamespace(path=lambda *parts: "/".join(parts)),
        progress=lambda *args, **kwargs: reports.append((args, kwargs)),
    )
    shards.work(part)
    assert reports[-1][0][:2] == (32, 32) and reports[-1][1]["force"] and reports[-1][1]["shards"] == 32
    assert not any(kwargs["force"] for _, kwargs in reports[:-1])


# --- the API server's refusals, through the real entry point (secoctl.cli.main) ---


def call_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from secoctl.cli import main

    monkeypatch.setattr(sys, "argv", ["secoctl", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    out, err = capsys.readouterr()
    return stopped.value.code, out, err


def refusing(monkeypatch, status: int, where: str, method: str | None = None) -> None:
    """The fixed namespace, whose API server answers `status` to the requests whose path holds `where`."""
    from secoctl.backends.kubernetes import client

    answer = client.Cluster.request

    def request(self, verb, path, body=None, query=None, content_type=None, raw=False):
        if where in path and (method is None or verb == method):
            raise client.ApiError(status, {"message": f"{where} is refused\nby policy"}, verb, path)
        if verb != "GET":
            return {}
        try:
            return answer(self, verb, path, body, query, content_type, raw)
        except KeyError:  # one object by name, which the fixed namespace does not hold
            raise client.ApiError(404, {"message": "not found"}, verb, path) from None

    monkeypatch.setattr(client.Cluster, "request", request)


@pytest.mark.parametrize("status", [401, 403, 429, 503])
@pytest.mark.parametrize(
    "command,where,method",
    [
        (["status"], "jobs", "GET"),
        (["logs", "quickstart"], "pods", "GET"),
        (["delete", "quickstart"], "jobs", "DELETE"),
        (["apply", "SPEC"], "configmaps", "PATCH"),
    ],
)
def test_an_api_refusal_is_one_line_with_the_verb_resource_and_status(
    monkeypatch, capsys, tmp_path, cluster_api, status, command, where, method
):
    spec = tmp_path / "cluster.yaml"  # the quickstart as a cluster takes it: a pushed image, an object store
    spec.write_text(
        (ROOT / "examples/quickstart.yaml")
        .read_text()
        .replace("spec:\n", "spec:\n  image: registry.example.org/secoctl:1\n  storage: s3://bucket/seco\n", 1)
    )
    command = [str(spec) if arg == "SPEC" else arg for arg in command]
    refusing(monkeypatch, status, where, method)
    if command[0] == "delete":
        from secoctl.backends.kubernetes import client

        monkeypatch.setattr(
            client.Cluster,
            "list",
            lambda self, kind, selector: (
                [{"metadata": {"name": f"quickstart-{kind.lower()}"}}] if kind == "Job" else []
            ),
        )
    code, out, err = call_main(monkeypatch, capsys, *command)
    lines = err.strip().splitlines()
    assert code == (2 if command[0] == "apply" else 1) and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: ") and f"{method} /" in lines[0] and where in lines[0], err
    assert f"HTTP {status}" in lines[0] and f"{where} is refused by policy" in lines[0], err


def test_an_events_listing_that_stays_busy_leaves_status_without_events(monkeypatch, cluster_api):
    from typer.testing import CliRunner

    from secoctl.cli import app

    refusing(monkeypatch, 429, "events")
    result = CliRunner().invoke(app, ["status"], env={"COLUMNS": "200"})
    assert result.exception is None and result.exit_code == 0, result.output
    assert "the Jobs' warning events were not read: GET /api/v1/namespaces/research/events: HTTP 429" in result.output
    assert "quickstart  shards" in result.output


@pytest.mark.parametrize(
    "header,seconds", [("99999999", 8.0), ("-5", 0.0), ("inf", 0.0), ("nan", 0.0), ("soon", 0.0), ("3", 3.0)]
)
def test_a_retry_after_is_kept_within_the_backoff_cap(header, seconds):
    from secoctl.backends.kubernetes import client

    assert client.BACKOFF_CAP_S == 8.0
    assert client._retry_after({"Retry-After": header}) == seconds
