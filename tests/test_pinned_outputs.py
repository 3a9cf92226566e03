"""What users and their scripts read from secoctl stays byte for byte: `secoctl schema`, and `status` as JSON,
`-o wide` and the 80-column table, for a fixed stored tree and a fixed cluster. Regenerate a pin only for a
change meant to be seen: `SECOCTL_REPIN=1 pytest tests/test_pinned_outputs.py`."""

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from secoctl import store
from secoctl.spec.file import load_documents, read_spec
from secoctl.stored import named_stage_tree, prepare_storage
from secoctl.tree import experiment_uri
from tests.conftest import ROOT

PINS = Path(__file__).parent / "pinned"
NOW = 1_800_000_000.0
COLLECT_SUMS = {"counts": ["accepted", "dropped", "failed"], "rates": ["patches_per_s"]}


def check_pin(name: str, text: str) -> None:
    path = PINS / name
    if os.environ.get("SECOCTL_REPIN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{name} changed; diff it against tests/pinned/{name}"


def invoke(*args: str) -> str:
    from secoctl.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_json_schema_is_pinned():
    check_pin("schema.json", invoke("schema"))


def progress(done: float, total: float, unit: str, updated_at: float, metrics: dict, summed=None, **extra) -> dict:
    return {
        "done": done,
        "total": total,
        "unit": unit,
        "updated_at": updated_at,
        "metrics": metrics,
        "summed": summed or {"counts": [], "rates": []},
        **extra,
    }


@pytest.fixture
def stored_tree(storage, monkeypatch):
    """The quickstart half way: collect and shards complete, pretrain running with a rate, evaluate waiting,
    a second experiment interrupted at collect. Every clock is fixed."""
    import secoctl.status

    monkeypatch.setattr(secoctl.status.time, "time", lambda: NOW)
    monkeypatch.setenv("SECOCTL_STORAGE", storage.as_uri())
    base = load_documents(read_spec(str(ROOT / "examples/quickstart.yaml")), "quickstart.yaml")[0]
    for name in ("quickstart", "second"):
        experiment = base.model_copy(update={"metadata": base.metadata.model_copy(update={"name": name})})
        if name == "second":  # another dataset: one the first does not share
            spec = experiment.spec
            experiment = experiment.model_copy(
                update={"spec": spec.model_copy(update={"collect": spec.collect.model_copy(update={"seed": 1})})}
            )
        experiment = experiment.with_storage(storage.as_uri())
        root = experiment_uri(storage.as_uri(), name)
        prepare_storage(root, experiment)
        from secoctl import plan

        for stage in plan.stages(experiment, single_machine=True):
            tree = named_stage_tree(experiment, stage.name)
            if name == "second":
                if stage.name == "collect":
                    store.write_json(tree.running, {"pid": 2**22 + 1, "host": "elsewhere", "started_at": NOW - 400})
                    store.write_json(
                        tree.progress(0),
                        progress(
                            40,
                            128,
                            "locations",
                            NOW - 300,
                            {"accepted": 40, "dropped": 3, "failed": 0, "patches_per_s": 12.5},
                            COLLECT_SUMS,
                            per_s=0.5,
                        ),
                    )
                continue
            if stage.name in ("collect", "shards"):
                for index in range(stage.parts):
                    store.write_json(tree.part_done(index), {"index": index})
                    store.write_json(
                        tree.progress(index),
                        progress(
                            128,
                            128,
                            "locations",
                            NOW - 3000,
                            {"accepted": 110, "dropped": 18, "failed": 0, "patches_per_s": 41.5, "in_flight": 16},
                            COLLECT_SUMS,
                        ),
                    )
                store.write_json(
                    tree.success, {"fingerprint": stage.fingerprint, "completed_at": NOW - 2000, "parts": stage.parts}
                )
            elif stage.name == "pretrain":
                store.write_json(tree.running, {"pid": os.getpid(), "host": "elsewhere", "started_at": NOW - 900})
                store.write_json(
                    tree.progress(0),
                    progress(
                        150,
                        300,
                        "steps",
                        NOW - 10,
                        {"loss": 6.31, "samples_per_s": 105.2, "embed_std": 0.061, "embed_std_low_logs": 0},
                        per_s=2.0,
                    ),
                )
    return storage


@pytest.mark.parametrize("output", ["json", "wide", "table"])
def test_local_status_is_pinned(stored_tree, output):
    check_pin(f"status-local.{output}", invoke("status", "--local", "-o", output))
    if output == "table":
        check_pin("status-local-one.table", invoke("status", "quickstart", "--local"))


def _job(experiment: str, stage: str, status: dict, suspend: bool = False) -> dict:
    return {
        "metadata": {
            "name": f"{experiment}-{stage}",
            "uid": f"uid-{experiment}-{stage}",
            "labels": {"seco.dev/experiment": experiment, "seco.dev/stage": stage},
            "creationTimestamp": "2027-01-15T08:00:00Z",
        },
        "spec": {"suspend": suspend, "completions": 1, "template": {"metadata": {}}},
        "status": status,
    }


def _pod(experiment: str, stage: str, phase: str, restarts: int = 0, waiting: str | None = None) -> dict:
    state = {"waiting": {"reason": waiting, "message": f"{waiting} for the image"}} if waiting else {"running": {}}
    return {
        "metadata": {
            "name": f"{experiment}-{stage}-0-abcde",
            "labels": {
                "seco.dev/experiment": experiment,
                "seco.dev/stage": stage,
                "batch.kubernetes.io/job-completion-index": "0",
            },
            "ownerReferences": [{"kind": "Job", "uid": f"uid-{experiment}-{stage}"}],
            "creationTimestamp": "2027-01-15T08:01:00Z",
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "stage", "restartCount": restarts, "state": state}]},
    }


@pytest.fixture
def cluster_api(tmp_path, monkeypatch, storage):
    """A namespace whose API answers are fixed: one experiment with its driver running, collect complete,
    shards running with a pod pulling its image, the rest suspended; a Job warning event."""
    from secoctl.backends.kubernetes import client

    experiment = load_documents(read_spec(str(ROOT / "examples/quickstart.yaml")), "quickstart.yaml")[0]
    spec_text = (ROOT / "examples/quickstart.yaml").read_text()
    storage_spec = spec_text.replace("spec:\n", f"spec:\n  storage: {storage.as_uri()}\n", 1)
    complete = {
        "conditions": [{"type": "Complete", "status": "True"}],
        "succeeded": 2,
        "completionTime": "2027-01-15T08:20:00Z",
    }
    jobs = [
        _job("quickstart", "driver", {"active": 1, "ready": 1}),
        _job("quickstart", "collect", complete),
        _job("quickstart", "shards", {"active": 1, "ready": 0}),
        *(_job("quickstart", s, {}, suspend=True) for s in ("pretrain", "evaluate", "publish")),
    ]
    pods = [
        _pod("quickstart", "driver", "Running", restarts=1),
        _pod("quickstart", "shards", "Pending", waiting="ImagePullBackOff"),
    ]
    events = [
        {
            "involvedObject": {"kind": "Job", "name": "quickstart-pretrain"},
            "type": "Warning",
            "reason": "FailedCreate",
            "message": "exceeded quota: [gpu-quota] requested nvidia.com/gpu=1",
            "lastTimestamp": "2027-01-15T08:30:00Z",
        }
    ]
    answers = {
        "configmaps": [
            {
                "metadata": {
                    "name": "quickstart-spec",
                    "labels": {"app.kubernetes.io/managed-by": "secoctl", "seco.dev/experiment": "quickstart"},
                },
                "data": {"spec.yaml": storage_spec},
            }
        ],
        "jobs": jobs,
        "pods": pods,
        "events": events,
    }

    def request(self, method, path, body=None, query=None, content_type=None, raw=False):
        assert method == "GET", (method, path)
        items = answers[path.rsplit("/", 1)[1]]
        selector = dict(query or []).get("labelSelector")
        if selector:
            wanted = dict(pair.split("=") for pair in selector.split(","))
            items = [i for i in items if all(i["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
        return {"items": items}

    def init(self, context=None, namespace=None):
        self.namespace = namespace or "research"

    stored = experiment.with_storage(storage.as_uri())
    root = experiment_uri(storage.as_uri(), "quickstart")
    prepare_storage(root, stored)
    from secoctl import plan

    shards = named_stage_tree(stored, "shards")
    store.write_json(shards.running, {"executor": "kubernetes", "job": "quickstart-shards", "started_at": NOW - 60})
    store.write_json(shards.progress(0), progress(3, 8, "shards", NOW - 5, {"shards": 3}, per_s=0.1))
    collect = named_stage_tree(stored, "collect")
    store.write_json(
        collect.success,
        {"fingerprint": plan.stage(stored, "collect").fingerprint, "completed_at": NOW - 600, "parts": 2},
    )
    monkeypatch.setattr(client.Cluster, "__init__", init)
    monkeypatch.setattr(client.Cluster, "request", request)
    import secoctl.backends
    import secoctl.status

    monkeypatch.setattr(secoctl.backends, "cluster_configured", lambda: True)
    monkeypatch.setattr(secoctl.status.time, "time", lambda: NOW)
    return experiment


@pytest.mark.parametrize("output", ["json", "table"])
def test_cluster_status_is_pinned(cluster_api, output):
    check_pin(f"status-cluster.{output}", invoke("status", "-o", output))
