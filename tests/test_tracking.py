"""Tracking: a small pretrain, evaluate and publish logged to a real `mlflow server`, read back through its
REST API, and the evaluation's TensorBoard events read back by TensorBoard's own reader."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jobs.localcloud import eurosat
from secoctl import store, weights
from secoctl.backends.local.executor import LocalExecutor
from tests.conftest import ROOT
from tests.mlflow_server import mlflow_server, rest
from tests.pretrain.made_data import collected_experiment
from tests.tensorboard_events import scalars

SPEC = """apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {name: tracked}
spec:
  collect: {source: stac, workers: 1, bands: [B04, B03, B02]}
  pretrain: {backbone: resnet18, maxSteps: 12, batchSize: 8, queueSize: 16, inputSize: 32, lrMilestones: [],
             loaderWorkers: 0, checkpointEverySteps: 12, bf16: false, nodes: 1, gpusPerNode: 0}
  evaluate: [{task: eurosat, protocol: linear, epochs: 2, dataPath: "DATA", baselines: [random]}]
  publish: {name: tracked-rn18}
  tracking: {mlflow: {uri: "URL", experiment: secoctl-test}}
"""


@pytest.mark.slow
def test_pretrain_evaluate_and_publish_log_one_run_that_mlflow_serves_back(storage, tmp_path, monkeypatch):
    data = eurosat.make(tmp_path / "eurosat", {"train": 8, "val": 2, "test": 4})
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "local-token")  # what a pod gets from tokenSecret
    (tmp_path / "mlflow").mkdir()
    with mlflow_server(tmp_path / "mlflow") as url:
        experiment, root = collected_experiment(storage.as_uri(), SPEC.replace("DATA", str(data)).replace("URL", url))
        LocalExecutor(storage.as_uri()).apply(experiment)
        experiment_id = rest(url, "experiments/get-by-name", experiment_name="secoctl-test")["experiment"][
            "experiment_id"
        ]
        runs = rest(url, "runs/search", {"experiment_ids": [experiment_id]})["runs"]
        history = {
            key: rest(url, "metrics/get-history", run_id=runs[0]["info"]["run_id"], metric_key=key)["metrics"]
            for key in ("loss", "lr", "eurosat-linear-100pct/accuracy/this-run")
        }
    assert len(runs) == 1, "every stage logs to the experiment's one run"
    run = runs[0]
    assert run["info"]["run_name"] == "tracked" and run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["spec.pretrain.maxSteps"] == "12" and params["spec.evaluate.0.task"] == "eurosat"
    metrics = [
        json.loads(line) for line in (storage / "experiments/tracked/pretrain/metrics.jsonl").read_text().splitlines()
    ]
    assert [(m["step"], m["value"]) for m in history["loss"]] == [
        (r["step"], pytest.approx(r["loss"])) for r in metrics
    ]
    assert {m["key"] for m in run["data"]["metrics"]} >= set(metrics[0]) - {"step"}
    evaluation = store.read_json(store.join(root, "evaluate", "eurosat-linear-100pct", "metrics.json"))
    accuracy = evaluation["results"]["this-run"]["accuracy"]
    assert [m["value"] for m in history["eurosat-linear-100pct/accuracy/this-run"]] == [pytest.approx(accuracy)]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["weights_uri"] == weights.version_uri(storage.as_uri(), "tracked-rn18", "1")
    assert tags["weights"] == "tracked-rn18:1"
    events = scalars(storage / "experiments/tracked/evaluate/eurosat-linear-100pct/tensorboard")
    assert events == {
        "accuracy/this-run": [(0, pytest.approx(accuracy))],
        "accuracy/random": [(0, pytest.approx(evaluation["results"]["random"]["accuracy"]))],
    }


def test_without_tracking_no_stage_imports_mlflow():
    code = (
        "import sys, jobs.pretrain.train, jobs.evaluate.stage, jobs.publish.stage\n"
        "from jobs.common import tracking\n"
        "from secoctl.spec import Experiment\n"
        "untracked = Experiment.model_validate({'apiVersion': 'seco.dev/v1alpha1', 'kind': 'Experiment', "
        "'metadata': {'name': 'x'}, 'spec': {}})\n"
        "assert tracking.run_of(untracked) is None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"
