"""The experiment's MLflow run, where spec.tracking.mlflow names a server; nothing of mlflow is imported otherwise.

One run per experiment and spec, found by its tag in the named MLflow experiment, or created by the first
stage that logs to it (pretrain, normally) with the spec, flattened, as its params. Params cannot change
once logged, so a re-run whose spec differs from a run's params gets a run of its own, tagged with the one
it follows (`secoctl.previous_run`); the stages that spec runs log to it.

Tracking never stops or slows a stage: every call only queues a record, and one background sender per
process finds the run and sends the queue in order. Each request ends within REQUEST_TIMEOUT_S and is not
retried by mlflow itself; while the server is silent, refuses or fails, the sender says so once on stderr,
keeps the newest QUEUE_LIMIT records and tries again with a growing pause, so the records catch up when
the server answers. At exit the sender gets CLOSE_WAIT_S to finish, then the count left unsent is printed.
A part that fails marks the run FAILED (`failed`, called by jobs.common.part).

The client reads its token from MLFLOW_TRACKING_TOKEN itself: the logging stages' pods get that one key from
spec.tracking.mlflow.tokenSecret (secoctl/stages.py), a local run from its environment.
"""

from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
import time
from typing import Any

from secoctl.spec import Experiment
from secoctl.store import one_line

EXPERIMENT_TAG = "secoctl.experiment"
PREVIOUS_RUN_TAG = "secoctl.previous_run"
BATCH = 100  # MLflow's log-batch accepts at most 100 params per request
REQUEST_TIMEOUT_S = 10  # connect and read, per request
QUEUE_LIMIT = 10_000  # records kept while the server does not answer; the oldest go first
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0  # the sender's pause after a failed request, doubling up to the max
CLOSE_WAIT_S = 30.0  # how long a finished stage waits at exit for the queue to be sent

_runs: dict[str, Run] = {}  # one sender per experiment and process
_runs_lock = threading.Lock()


def flattened(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested spec as MLflow params: `pretrain.epochs`, `evaluate.0.task`, ..."""
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return {
            key: text
            for name, item in items
            for key, text in flattened(item, f"{prefix}.{name}" if prefix else str(name)).items()
        }
    return {prefix: str(value)}


def warn(text: str) -> None:
    print(f"tracking: {text}", file=sys.stderr, flush=True)


class Run:
    """A queue of records for the experiment's run, and the thread that sends them."""

    def __init__(self, experiment: Experiment) -> None:
        mlflow_spec = experiment.spec.tracking.mlflow
        self.uri, self.mlflow_experiment = mlflow_spec.uri, mlflow_spec.experiment
        self.name, self.params = experiment.name, flattened(experiment.to_yaml_dict())
        self.run_id: str | None = None
        self.attempts = 0  # requests tried, failed ones included
        self.dropped = 0  # records the queue had no room for
        self.refused = 0  # records the server answered were wrong
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._condition = threading.Condition()
        self._closing = False
        self._given_up = False
        self._down = False
        self._client: Any = None
        self._thread = threading.Thread(target=self._send_all, name="mlflow-sender", daemon=True)
        self._thread.start()

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._put(("metrics", step, values, int(time.time() * 1000)))

    def tag(self, key: str, value: str) -> None:
        self._put(("tag", key, value))

    def finish(self) -> None:
        """Each logging part ends the run it resumed: the next stage's part marks it running again."""
        self._put(("status", "FINISHED"))

    def fail(self) -> None:
        self._put(("status", "FAILED"))

    def running(self) -> None:
        self._put(("status", "RUNNING"))

    def pending(self) -> int:
        with self._condition:
            return len(self._queue)

    def close(self, wait_s: float = CLOSE_WAIT_S) -> int:
        """Give the sender `wait_s` to send what is queued, then stop it; returns (and reports) how many
        records were not sent. Closing again returns at once."""
        with self._condition:
            if self._closing:
                return len(self._queue)
            self._closing = True
            self._condition.notify_all()
        self._thread.join(timeout=wait_s)
        with self._condition:
            self._given_up = True  # a sender still waiting on the server stops at its next turn
            left = len(self._queue)
        if left or self.dropped or self.refused:
            unsent = left + self.dropped + self.refused
            warn(f"{unsent} record(s) of run {self.name} were not sent to MLflow at {self.uri}")
        return left

    def _put(self, record: tuple[Any, ...]) -> None:
        with self._condition:
            if len(self._queue) >= QUEUE_LIMIT:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(record)
            self._condition.notify_all()

    def _send_all(self) -> None:
        pause = RETRY_FIRST_S
        while True:
            with self._condition:
                while not self._queue and not self._closing and self.run_id is not None:
                    self._condition.wait()
                if self._given_up or (self._closing and not self._queue):
                    return
                record = self._queue[0] if self._queue else None
            try:
                self.attempts += 1
                if self.run_id is None:
                    self.run_id = self._connect()
                if record is not None:
                    self._send(record)
                    self._done(record)
            except Exception as error:  # the server's trouble is never the stage's
                if record is not None and self.run_id is not None and _refused(error):
                    self.refused += 1
                    if self.refused == 1:
                        warn(
                            f"MLflow at {self.uri} refused a {record[0]} record ({one_line(error, limit=200)}); "
                            "such records are left out"
                        )
                    self._done(record)
                    continue
                if not self._down:
                    warn(
                        f"MLflow at {self.uri} did not take a record ({one_line(error, limit=200)}); the stage "
                        f"goes on, keeps up to {QUEUE_LIMIT} records and sends them when it answers"
                    )
                self._down = True
                with self._condition:
                    if not self._given_up:
                        self._condition.wait(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            if self._down:
                warn(f"MLflow at {self.uri} answers again; sending the {self.pending()} record(s) kept meanwhile")
                self._down = False
            pause = RETRY_FIRST_S

    def _done(self, record: tuple[Any, ...]) -> None:
        with self._condition:
            if self._queue and self._queue[0] is record:  # not already dropped for room meanwhile
                self._queue.popleft()

    def _connect(self) -> str:
        """The run: the newest with this experiment's tag, marked running, unless its params are another
        spec's; else a new one with the spec as params."""
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(REQUEST_TIMEOUT_S))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the sender retries, without blocking
        from mlflow import MlflowClient
        from mlflow.entities import Param

        client = self._client = self._client or MlflowClient(tracking_uri=self.uri)
        found = client.get_experiment_by_name(self.mlflow_experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(self.mlflow_experiment)
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{EXPERIMENT_TAG}` = '{self.name}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        tags = {EXPERIMENT_TAG: self.name}
        if runs:
            logged = runs[0].data.params
            if all(logged.get(key, value) == value for key, value in self.params.items()):
                run_id = runs[0].info.run_id
                new = [Param(key, value) for key, value in self.params.items() if key not in logged]
                for start in range(0, len(new), BATCH):
                    client.log_batch(run_id, params=new[start : start + BATCH])
                client.update_run(run_id, status="RUNNING")
                return run_id
            tags[PREVIOUS_RUN_TAG] = runs[0].info.run_id
        run_id = client.create_run(experiment_id, run_name=self.name, tags=tags).info.run_id
        params = [Param(key, value) for key, value in self.params.items()]
        for start in range(0, len(params), BATCH):
            client.log_batch(run_id, params=params[start : start + BATCH])
        return run_id

    def _send(self, record: tuple[Any, ...]) -> None:
        kind, *fields = record
        if kind == "metrics":
            from mlflow.entities import Metric

            step, values, at_ms = fields
            self._client.log_batch(self.run_id, metrics=[Metric(k, v, at_ms, step) for k, v in values.items()])
        elif kind == "tag":
            self._client.set_tag(self.run_id, *fields)
        elif fields[0] == "RUNNING":
            self._client.update_run(self.run_id, status="RUNNING")
        else:
            self._client.set_terminated(self.run_id, fields[0])


def _refused(error: Exception) -> bool:
    """Whether sending the record again cannot help: the server answered it is wrong (a 4xx other than a token's
    or a load's), or the client could not even encode it (mlflow wraps every failure to reach the server)."""
    from mlflow.exceptions import MlflowException

    if not isinstance(error, MlflowException):
        return True
    return 400 <= error.get_http_status_code() < 500 and error.get_http_status_code() not in (401, 403, 429)


def run_of(experiment: Experiment) -> Run | None:
    """The experiment's run, marked running; None without spec.tracking.mlflow. Returns at once."""
    tracking = experiment.spec.tracking
    if tracking is None or tracking.mlflow is None:
        return None
    with _runs_lock:
        run = _runs.get(experiment.name)
        if run is None:
            run = _runs[experiment.name] = Run(experiment)  # its sender marks the run running
            atexit.register(run.close)
        else:
            run.running()
    return run


def failed(experiment: Experiment | None) -> None:
    """The part failed: its run says FAILED, not the FINISHED of the stage before it."""
    run = run_of(experiment) if experiment is not None else None
    if run:
        run.fail()
