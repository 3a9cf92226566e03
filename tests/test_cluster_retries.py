"""The Kubernetes client's bounded retries, through the fault proxy (jobs.localcloud.faults) in front of a
real HTTP server that serves the API's answers as files: a busy API server (429, 5xx), a reset and a
stall are asked again; what is not the server's fault (404) is not; the last failure is one line.

Fifty drivers on one control plane met exactly this: a pod listing that did not answer in 30 s ended
every driver with a urllib3 traceback (benchmarks.scale, issue 28)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.localcloud.servers import fault_proxy, fault_report, free_port, running

NAMESPACE = "exp"
PODS = {"kind": "PodList", "items": [{"metadata": {"name": "exp-collect-0"}}]}


@contextlib.contextmanager
def api_behind_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rules: list[dict]) -> Iterator[str]:
    """A kubeconfig that points at the proxy; the listing of pods served as a file behind it."""
    served = tmp_path / "served"
    listing = served / "api/v1/namespaces" / NAMESPACE / "pods"
    listing.parent.mkdir(parents=True)
    listing.write_text(json.dumps(PODS))
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(served)]
    with running(argv, f"http://127.0.0.1:{port}/"), fault_proxy(f"http://127.0.0.1:{port}", rules=rules) as proxy:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "test",
                    "clusters": [{"name": "test", "cluster": {"server": proxy}}],
                    "users": [{"name": "test", "user": {"token": "not-a-secret"}}],
                    "contexts": [
                        {"name": "test", "context": {"cluster": "test", "user": "test", "namespace": NAMESPACE}}
                    ],
                }
            )
        )
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        from kubernetes.config import kube_config  # it reads KUBECONFIG once, when first imported

        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield proxy


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch):
    from secoctl.backends.kubernetes import client as kubernetes

    monkeypatch.setattr(kubernetes, "REQUEST_TIMEOUT_S", 1)
    monkeypatch.setattr(kubernetes, "BACKOFF_CAP_S", 0.2)
    return kubernetes


def test_a_busy_resetting_or_stalled_api_server_is_asked_again(tmp_path, monkeypatch, quick):
    rules = [
        {"path": "pods", "action": "status", "status": 503, "times": 2},
        {"path": "pods", "action": "status", "status": 429, "retry_after": 1, "times": 1},
        {"path": "pods", "action": "reset", "times": 1},
        {"path": "pods", "action": "stall", "seconds": 3, "times": 1},
    ]
    with api_behind_faults(tmp_path, monkeypatch, rules) as proxy:
        assert quick.Cluster().pods({"secoctl.io/experiment": NAMESPACE}) == PODS["items"]
        report = fault_report(proxy)
    assert [rule["fired"] for rule in report["rules"]] == [2, 1, 1, 1]
    assert quick.REQUEST_TRIES >= 6  # the five faults above and the answer


def test_what_is_no_fault_of_the_server_is_not_repeated(tmp_path, monkeypatch, quick):
    with api_behind_faults(tmp_path, monkeypatch, []) as proxy:
        cluster = quick.Cluster()
        assert cluster.get("Job", "absent") is None
        assert fault_report(proxy)["requests"] == 1


def test_the_last_failure_is_one_line(tmp_path, monkeypatch, quick):
    from secoctl.errors import UserError

    monkeypatch.setattr(quick, "REQUEST_TRIES", 2)
    with api_behind_faults(tmp_path, monkeypatch, [{"path": "pods", "action": "stall", "seconds": 3, "times": 2}]):
        with pytest.raises(UserError) as raised:
            quick.Cluster().pods({"secoctl.io/experiment": NAMESPACE})
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("cannot reach the cluster at http://127.0.0.1:")
    assert f"GET /api/v1/namespaces/{NAMESPACE}/pods, 2 tries" in str(raised.value)

    monkeypatch.setattr(quick, "REQUEST_TRIES", 2)
    with api_behind_faults(
        tmp_path / "again", monkeypatch, [{"path": "pods", "action": "status", "status": 500, "times": 2}]
    ):
        with pytest.raises(quick.ApiError) as refused:
            quick.Cluster().pods({"secoctl.io/experiment": NAMESPACE})
    assert refused.value.status == 500


def test_status_without_the_warning_events_when_they_cannot_be_listed(tmp_path, monkeypatch, quick):
    """The warnings only explain why a stage waits: when their listing times out on every try, `status`
    goes on without them and says so in one line (benchmarks.scale: 16,000 events, no answer in 30 s)."""
    from secoctl.backends.kubernetes.executor import KubernetesExecutor

    monkeypatch.setattr(quick, "REQUEST_TRIES", 2)
    with api_behind_faults(tmp_path, monkeypatch, [{"path": "/events", "action": "stall", "seconds": 3, "times": 2}]):
        events, workloads, unread = KubernetesExecutor(quick.Cluster()).waiting_reasons(queued=False)
    assert (events, workloads) == ([], None)
    assert unread.startswith("the Jobs' warning events were not read: cannot reach the cluster at ")
    assert "\n" not in unread


def served_complete_jobs(tmp_path: Path) -> Path:
    """A spec on file:// storage, and behind the proxy each of its stages' Jobs, complete, as the driver reads them."""
    import yaml

    from secoctl import plan, render
    from secoctl.spec.file import load_documents

    document = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml").read_text())
    document["metadata"]["name"] = NAMESPACE
    document["spec"]["storage"] = (tmp_path / "storage").as_uri()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(document))
    experiment = load_documents(spec.read_text(), str(spec))[0]
    jobs = tmp_path / "served" / "apis/batch/v1/namespaces" / NAMESPACE / "jobs"
    jobs.mkdir(parents=True)
    for stage in plan.stages(experiment):
        name = render.job_name(experiment, stage.name)
        (jobs / name).write_text(
            json.dumps(
                {
                    "metadata": {"name": name, "uid": name, "labels": {}},
                    "spec": {
                        "suspend": False,
                        "template": {"metadata": {"annotations": {render.ANNOTATION_FINGERPRINT: stage.fingerprint}}},
                    },
                    "status": {"succeeded": stage.parts, "conditions": [{"type": "Complete", "status": "True"}]},
                }
            )
        )
    return spec


def test_a_driver_waits_out_an_api_server_that_does_not_answer(tmp_path, monkeypatch, quick, capsys):
    """Each request of the driver's watch tries REQUEST_TRIES times; past those it waits (PATIENCE_S) rather
    than exit, and reads no pods of a Job whose own status leaves nothing to explain."""
    from secoctl import driver

    spec = served_complete_jobs(tmp_path)
    monkeypatch.setattr(quick, "REQUEST_TRIES", 2)
    rules = [
        {"path": "-pretrain$", "action": "status", "status": 503, "times": 3},
        {"path": "-evaluate$", "action": "stall", "seconds": 3, "times": 3},
        {"path": "/pods", "action": "status", "status": 500, "times": 0},
    ]
    with api_behind_faults(tmp_path, monkeypatch, rules) as proxy:
        code = driver.main(["--spec", str(spec), "--namespace", NAMESPACE, "--poll", "0.1"])
        report = fault_report(proxy)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0, events[-1]
    assert events[-1]["event"] == "experiment_complete"
    unanswered = [e for e in events if e["event"] == "cluster_unanswered"]
    assert [e["reading"] for e in unanswered] == ["Job exp-pretrain", "Job exp-evaluate"]
    assert unanswered[0]["message"] == "the API server answered 503: injected fault"
    assert unanswered[1]["message"].startswith("cannot reach the cluster at ")
    assert [r["fired"] for r in report["rules"]] == [3, 3, 0]
    assert report["rules"][2]["seen"] == 0  # every Job complete: nothing for its pods to explain


def test_a_driver_gives_up_after_its_patience_in_one_line(tmp_path, monkeypatch, quick, capsys):
    from secoctl import driver

    spec = served_complete_jobs(tmp_path)
    monkeypatch.setattr(quick, "REQUEST_TRIES", 2)
    monkeypatch.setattr(driver, "PATIENCE_S", 1.0)
    with api_behind_faults(
        tmp_path, monkeypatch, [{"path": "-collect$", "action": "status", "status": 503, "times": 1000}]
    ):
        code = driver.main(["--spec", str(spec), "--namespace", NAMESPACE, "--poll", "0.3"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 2
    assert events[-1]["event"] == "driver_error" and "\n" not in events[-1]["message"]
    assert any(e["event"] == "cluster_unanswered" for e in events)


def test_a_storage_the_driver_may_not_write_is_one_line_naming_the_pods_user(tmp_path, monkeypatch, capsys):
    from secoctl import driver

    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: seco.dev/v1alpha1\nkind: Experiment\nmetadata: {name: refused}\n")

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/storage/datasets/collect-0123")

    monkeypatch.setattr(driver, "Cluster", lambda namespace=None: None)
    monkeypatch.setattr(driver.Driver, "run", refused)
    assert driver.main(["--spec", str(spec)]) == 2
    line = capsys.readouterr().out.strip()
    assert '"driver_error"' in line and "uid 65532" in line and "Traceback" not in line
