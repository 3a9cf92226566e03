"""MLflow going away never stops or slows a stage: a silent, failing or absent server costs it nothing, the
records catch up when the server answers, a failed part leaves its run FAILED, and a re-run with another
spec gets params that say so. Against a real `mlflow server`, a fault proxy in front of it, and a socket
that accepts and never answers; every wait is bounded and checked by counts, never timed."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from jobs.common import part, tracking
from jobs.common.failures import PartFailure
from jobs.localcloud.servers import fault_proxy, fault_report, free_port
from secoctl import partlog
from secoctl.spec.file import load_documents
from tests.mlflow_server import mlflow_server, rest

SPEC = """apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {{name: {name}}}
spec:
  storage: "{storage}"
  publish: {{name: outage-rn18, version: "{version}"}}
  tracking: {{mlflow: {{uri: "{url}", experiment: outages}}}}
"""


def experiment(url: str, name: str, storage: str = "file:///tmp/unused", version: str = "1"):
    return load_documents(SPEC.format(name=name, url=url, storage=storage, version=version), f"{name}.yaml")[0]


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


@pytest.fixture(autouse=True)
def fresh_senders(monkeypatch):
    """Short pauses between the sender's tries; each test's senders stopped and forgotten after it."""
    monkeypatch.setattr(tracking, "RETRY_FIRST_S", 0.05)
    monkeypatch.setattr(tracking, "RETRY_MAX_S", 0.2)
    yield
    for run in tracking._runs.values():
        run.close(wait_s=0)
    tracking._runs.clear()


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A server that accepts connections and never answers: the URL and the connections it took."""
    listener = socket.create_server(("127.0.0.1", 0))
    taken: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                taken.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", taken
    finally:
        listener.close()
        for connection in taken:
            connection.close()


def until(condition, tries: int = 600) -> None:
    """Wait for `condition`, a bounded number of short pauses."""
    event = threading.Event()
    for _ in range(tries):
        if condition():
            return
        event.wait(0.05)
    raise AssertionError("the condition never held")


def the_run(url: str, name: str) -> dict:
    experiment_id = rest(url, "experiments/get-by-name", experiment_name="outages")["experiment"]["experiment_id"]
    runs = rest(
        url,
        "runs/search",
        {
            "experiment_ids": [experiment_id],
            "filter": f"tags.`secoctl.experiment` = '{name}'",
            "order_by": ["attributes.start_time DESC"],
        },
    )["runs"]
    return runs


def test_a_silent_server_never_blocks_a_stage(monkeypatch, capfd):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    with silent_server() as (url, taken):
        steps_logged = []

        def train() -> None:
            run = tracking.run_of(experiment(url, "silent"))  # the stage's first call, before step 1
            for step in range(1, 101):
                run.metrics(step, {"loss": 1.0 / step})
                steps_logged.append(step)
            run.finish()

        stage = threading.Thread(target=train)
        stage.start()
        stage.join(timeout=60)
        assert not stage.is_alive() and steps_logged[-1] == 100  # all 100 steps while the server said nothing
        run = tracking._runs["silent"]
        until(lambda: run.attempts >= 2)  # each request ended at its timeout, and was tried again
        assert taken and run.run_id is None and run.pending() == 101
        assert run.close(wait_s=0) == 101
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("tracking:")]
    assert len(warnings) == 2 and "did not take a record" in warnings[0] and "101 record(s)" in warnings[1]


def test_records_kept_while_the_server_refuses_or_fails_catch_up_when_it_answers(mlflow, capfd):
    port = free_port()
    url = f"http://127.0.0.1:{port}"  # nothing listens there yet: refused
    run = tracking.run_of(experiment(url, "outage"))
    for step in range(1, 6):
        run.metrics(step, {"loss": float(step)})
    until(lambda: run.attempts >= 3)
    assert run.run_id is None and run.pending() == 5
    failing = [{"path": "/api/", "action": "status", "status": 503, "times": 4}]
    with fault_proxy(mlflow, rules=failing, port=port) as proxy:  # the server is back, answering 503 at first
        for step in range(6, 11):
            run.metrics(step, {"loss": float(step)})
        run.finish()
        assert run.close(wait_s=120) == 0
        fired = fault_report(proxy)["rules"][0]["fired"]
    (found,) = the_run(mlflow, "outage")
    history = rest(mlflow, "metrics/get-history", run_id=found["info"]["run_id"], metric_key="loss")["metrics"]
    assert [m["step"] for m in history] == list(range(1, 11)) and found["info"]["status"] == "FINISHED"
    assert fired == 4
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("tracking:")]
    assert len(warnings) == 2 and "did not take" in warnings[0] and "answers again" in warnings[1]


def test_a_failed_part_leaves_its_run_failed_not_finished(mlflow, tmp_path):
    tracked = experiment(mlflow, "failing", storage=(tmp_path / "storage").as_uri())
    tracking.run_of(tracked).finish()  # evaluate, the stage before, finished the run
    spec = tmp_path / "failing.yaml"
    spec.write_text(SPEC.format(name="failing", url=mlflow, storage=(tmp_path / "storage").as_uri(), version="1"))

    def publish(_part) -> dict:
        raise PartFailure("weights outage-rn18:1 are taken", "spec.publish.version")

    with pytest.raises(SystemExit) as exit_:
        part.run("publish", publish, ["--spec", str(spec)])
    assert exit_.value.code == partlog.PREDICTABLE_EXIT
    assert tracking._runs["failing"].close(wait_s=120) == 0
    (found,) = the_run(mlflow, "failing")
    assert found["info"]["status"] == "FAILED"


def test_a_rerun_with_another_spec_gets_a_run_whose_params_are_that_spec(mlflow):
    first = tracking.run_of(experiment(mlflow, "rerun", version="1"))
    first.finish()
    assert first.close(wait_s=120) == 0
    tracking._runs.clear()  # the re-apply's stages are other processes
    again = tracking.run_of(experiment(mlflow, "rerun", version="2"))
    again.tag("weights", "outage-rn18:2")
    again.finish()
    assert again.close(wait_s=120) == 0
    newest, older = the_run(mlflow, "rerun")
    params = {p["key"]: p["value"] for p in newest["data"]["params"]}
    tags = {t["key"]: t["value"] for t in newest["data"]["tags"]}
    assert params["spec.publish.version"] == "2" and tags["weights"] == "outage-rn18:2"
    assert tags[tracking.PREVIOUS_RUN_TAG] == older["info"]["run_id"]
    same = tracking.Run(experiment(mlflow, "rerun", version="2"))  # the same spec again: the same run
    same.finish()
    assert same.close(wait_s=120) == 0 and same.run_id == newest["info"]["run_id"]


def test_a_record_the_server_refuses_is_left_out_and_the_rest_still_sent(mlflow, capfd):
    run = tracking.run_of(experiment(mlflow, "refused"))
    run.metrics(1, {"loss": 1.0})
    run.metrics(2, {"../loss": 2.0})  # a name MLflow refuses
    run.metrics(3, {"loss": "not a number"})  # one the client cannot encode
    run.metrics(4, {"loss": 4.0})
    run.finish()
    assert run.close(wait_s=120) == 0 and run.refused == 2
    (found,) = the_run(mlflow, "refused")
    history = rest(mlflow, "metrics/get-history", run_id=found["info"]["run_id"], metric_key="loss")["metrics"]
    assert [m["step"] for m in history] == [1, 4] and found["info"]["status"] == "FINISHED"
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("tracking:")]
    assert "refused a metrics record" in warnings[0] and "2 record(s)" in warnings[-1]
