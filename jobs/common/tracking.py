"""The experiment's MLflow run, where spec.tracking.mlflow names a server; nothing of mlflow is imported otherwise.

One run per experiment, found by its tag in the named MLflow experiment, or created by the first stage that
logs to it (pretrain, normally) with the spec, flattened, as its params: params cannot change once logged.
The client reads its token from MLFLOW_TRACKING_TOKEN itself: the logging stages' pods get that one key from
spec.tracking.mlflow.tokenSecret (secoctl/stages.py), a local run from its environment.
"""

from __future__ import annotations

import time
from typing import Any

from secoctl.spec import Experiment

EXPERIMENT_TAG = "secoctl.experiment"
BATCH = 100  # MLflow's log-batch accepts at most 100 params per request


def flattened(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested spec as MLflow params: `pretrain.epochs`, `evaluate.0.task`, ..."""
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return {key: text for name, item in items
                for key, text in flattened(item, f"{prefix}.{name}" if prefix else str(name)).items()}
    return {prefix: str(value)}


class Run:
    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now_ms, step) for key, value in values.items()])

    def tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def finish(self) -> None:
        """Each logging part ends the run it resumed: the next stage's part marks it running again."""
        self.client.set_terminated(self.run_id, "FINISHED")


def run_of(experiment: Experiment) -> Run | None:
    """The experiment's run, marked running; None without spec.tracking.mlflow."""
    tracking = experiment.spec.tracking
    if tracking is None or tracking.mlflow is None:
        return None
    from mlflow import MlflowClient
    from mlflow.entities import Param

    client = MlflowClient(tracking_uri=tracking.mlflow.uri)
    found = client.get_experiment_by_name(tracking.mlflow.experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(tracking.mlflow.experiment)
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{EXPERIMENT_TAG}` = '{experiment.name}'",
                              order_by=["attributes.start_time ASC"], max_results=1)
    if runs:
        client.update_run(runs[0].info.run_id, status="RUNNING")
        return Run(client, runs[0].info.run_id)
    run_id = client.create_run(experiment_id, run_name=experiment.name, tags={EXPERIMENT_TAG: experiment.name}).info.run_id
    params = [Param(key, value) for key, value in flattened(experiment.to_yaml_dict()).items()]
    for start in range(0, len(params), BATCH):
        client.log_batch(run_id, params=params[start:start + BATCH])
    return Run(client, run_id)
