"""A stage is one record in secoctl.stages: a made one, added there alone, is planned, rendered,
run, shown by `status` and its logs read, locally and on a cluster, with nothing else changed."""

import json

import kubernetes_validate
import pytest
from typer.testing import CliRunner

from secoctl import plan, stages
from secoctl.backends.kubernetes.commands import KubernetesBackend
from secoctl.backends.kubernetes.executor import KubernetesExecutor
from secoctl.backends.local.executor import LocalExecutor
from secoctl.errors import SpecError
from secoctl.render import LABEL_STAGE, render
from secoctl.spec import ADMIN_OBJECT_NAMES, derived_name_suffixes, parse_experiment
from secoctl.status import cluster_rows
from tests.executor.fake_stage_argv import fake_argv

TILES = stages.StageRecord(
    "tiles",
    parts=lambda spec: spec.collect.workers,
    section=lambda spec: spec.pretrain,
    image=lambda spec: spec.driver_image or spec.image,
    resources=lambda spec: spec.collect.resources,
    retry_per_part=True,
    volumes=lambda spec: (
        stages.Volume("cache", "/cache", {"emptyDir": {"sizeLimit": spec.pretrain.resources.ephemeral_storage}}),
    ),
    env=lambda spec: ({"name": "SHARD_CACHE", "value": "/cache"},),
)


def install_plan() -> None:
    """A made stage right after collect, beside the real ones; the fake stage's processes call it too
    (FAKE_PLAN), as every process of a release holds the same records."""
    collect, *rest = stages.STAGES
    stages.STAGES = (collect, TILES, *rest)


@pytest.fixture(autouse=True)
def tiles_stage(monkeypatch):
    monkeypatch.setattr(stages, "STAGES", stages.STAGES)
    monkeypatch.setenv("FAKE_PLAN", __name__)
    install_plan()


def experiment(storage: str | None = None, name: str = "made", **pretrain):
    spec = {
        "image": "registry.example/secoctl:1",
        "collect": {"workers": 2},
        "pretrain": {"nodes": 2, "gpusPerNode": 1, "batchSize": 32, "queueSize": 64, **pretrain},
        "evaluate": [{"task": "eurosat"}],
        "publish": {"name": "made-weights"},
    }
    if storage:
        spec["storage"] = storage
    return parse_experiment(
        {"apiVersion": "seco.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": name}, "spec": spec}
    )


def test_plan_puts_the_made_stage_in_its_place_and_fingerprints_it():
    planned = {s.name: s for s in plan.stages(experiment())}
    assert list(planned) == ["collect", "tiles", "shards", "pretrain", "evaluate", "publish"]
    assert planned["tiles"].parts == 2 and planned["pretrain"].reads == ("collect", "tiles", "shards")
    assert plan.stage_argv(planned["tiles"], "/s.yaml") == ["python", "-m", "jobs.tiles", "--spec", "/s.yaml"]
    assert plan.changed_stages(experiment(), experiment(inputSize=128)) == [
        "tiles",
        "shards",
        "pretrain",
        "evaluate",
        "publish",
    ]


def test_render_makes_the_made_stage_a_job_from_its_record_alone():
    objects = render(experiment(), "seco")
    for obj in objects:
        kubernetes_validate.validate(obj, "1.31.0", strict=True)
    job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["labels"][LABEL_STAGE] == "tiles")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["metadata"]["name"] == "made-tiles" and job["spec"]["completions"] == 2
    assert job["spec"]["backoffLimitPerIndex"] == 3 and "backoffLimit" not in job["spec"]
    assert container["command"][-5:] == ["python", "-m", "jobs.tiles", "--spec", "/etc/secoctl/spec.yaml"]
    assert {"name": "cache", "emptyDir": {"sizeLimit": "300Gi"}} in pod["volumes"]  # pretrain's ephemeralStorage
    assert {"name": "cache", "mountPath": "/cache"} in container["volumeMounts"]
    assert {"name": "SHARD_CACHE", "value": "/cache"} in container["env"]
    role = next(o for o in objects if o["kind"] == "Role")
    assert "made-tiles" in role["rules"][0]["resourceNames"]  # the driver may start it
    assert {o["metadata"]["name"].removeprefix("made") for o in objects} == set(derived_name_suffixes())


def test_the_spec_refuses_a_name_whose_made_stage_job_an_admin_installs(monkeypatch):
    monkeypatch.setattr("secoctl.spec.ADMIN_OBJECT_NAMES", (*ADMIN_OBJECT_NAMES, "team-tiles"))
    with pytest.raises(SpecError, match="team-tiles"):
        experiment(name="team")


def test_the_local_executor_runs_it_and_status_and_logs_show_it(tmp_path):
    storage = (tmp_path / "storage").as_uri()
    LocalExecutor(storage, argv_for=fake_argv, concurrency=2).apply(experiment())
    cli = CliRunner()
    from secoctl.cli import app

    shown = cli.invoke(app, ["status", "made", "--local", "--storage", storage, "-o", "json"])
    assert shown.exit_code == 0, shown.output
    assert [(r["stage"], r["state"]) for r in json.loads(shown.output)] == [
        ("collect", "complete"),
        ("tiles", "complete"),
        ("shards", "complete"),
        ("pretrain", "complete"),
        ("evaluate", "complete"),
        ("publish", "complete"),
    ]
    logs = ["logs", "made", "--local", "--storage", storage, "--stage", "tiles", "--index", "1"]
    logged, records = cli.invoke(app, logs), cli.invoke(app, [*logs, "-o", "json"])
    assert logged.exit_code == 0 and records.exit_code == 0, (logged.output, records.output)
    assert "committed stage=tiles index=1" in logged.output.splitlines() and '"event"' not in logged.output
    assert '"event": "committed", "stage": "tiles", "index": 1' in records.output


class Namespace:
    """A namespace holding what `apply` made and nothing run yet: the Jobs suspended, no pods."""

    namespace = "seco"

    def __init__(self, objects):
        self.objects = objects

    def list(self, kind, selector):
        return [
            dict(o, metadata={**o["metadata"], "uid": o["metadata"]["name"]}) for o in self.objects if o["kind"] == kind
        ]

    def pods(self, selector):
        return []

    def optional_items(self, path, query=None):
        return []


def test_cluster_status_and_logs_show_it(tmp_path, monkeypatch, capsys):
    applied = experiment((tmp_path / "storage").as_uri())
    LocalExecutor(applied.spec.storage, argv_for=fake_argv, concurrency=2).apply(applied)
    target = KubernetesExecutor(Namespace(render(applied, "seco")))
    target.experiments = lambda: [applied]
    jobs = target.stage_facts(applied, *target.waiting_reasons(queued=False)[:2])
    assert list(jobs) == [stages.DRIVER, "collect", "tiles", "shards", "pretrain", "evaluate", "publish"]
    rows = {r.stage: r for r in cluster_rows("made", jobs, None, None)}
    assert rows["tiles"].state == "waiting" and "driver starts it" in rows["tiles"].reason
    backend = KubernetesBackend.__new__(KubernetesBackend)
    backend.target, backend.storage = target, None
    for line in backend.logs("made", "tiles", 0, False):
        print(line)
    captured = capsys.readouterr()
    assert "tiles logs from storage" in captured.err and '"stage": "tiles", "index": 0' in captured.out
