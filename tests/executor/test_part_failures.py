"""A part that fails predictably ends with one line (cause and spec field), its traceback above it in the log.

Each part runs as the executor and the pod run it, `python -m jobs.<stage> --spec FILE`, against real
servers: SeaweedFS for storage that refuses the credentials, a closed port for storage that cannot be
reached, an empty tree for a missing collect index, an empty folder for a dataset not at its dataPath.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs.common.logged import run as run_logged
from jobs.localcloud.servers import free_port
from secoctl import partlog, plan
from secoctl.backends.kubernetes.jobstate import pod_reasons
from secoctl.backends.local.executor import LocalExecutor, StageFailed
from secoctl.spec.file import load_documents
from secoctl.stored import named_stage_tree
from tests.conftest import run_cli
from tests.s3 import s3_bucket

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "seco-failures"


def spec_file(path: Path, storage: str, **sections) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "seco.dev/v1alpha1",
                "kind": "Experiment",
                "metadata": {"name": "failing"},
                "spec": {
                    "storage": storage,
                    "collect": {
                        "source": "stac",
                        "stacUrl": "http://127.0.0.1:1",
                        "locations": 4,
                        "patchSize": 32,
                        "workers": 1,
                    },
                    "pretrain": {"backbone": "resnet18", "batchSize": 16, "maxSteps": 10},
                    **sections,
                },
            }
        )
    )
    return path


def index_of(spec: Path, stage: str) -> str:
    """Where the stage's index is (a shared dataset's folder for collect and shards)."""
    return named_stage_tree(load_documents(spec.read_text(), str(spec))[0], stage).index


def run_part(stage: str, spec: Path, environment: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, JOB_COMPLETION_INDEX="0", SECOCTL_PARTS="1", PYTHONPATH=str(ROOT), **(environment or {}))
    return subprocess.run(
        [sys.executable, "-m", f"jobs.{stage}", "--spec", str(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def assert_one_line(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == partlog.PREDICTABLE_EXIT, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert partlog.failure_message(last) == message
    assert "Traceback (most recent call last)" in result.stderr  # the whole story stays in the part's log


def test_storage_that_cannot_be_reached(tmp_path: Path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = run_part(
        "collect",
        spec_file(tmp_path / "s.yaml", f"s3://{BUCKET}/down"),
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_REGION": "us-east-1",
        },
    )
    assert_one_line(
        result,
        f"collect part 0: storage s3://{BUCKET}/down not reachable at "
        f"{endpoint} (connection refused): check spec.storageSecret (its endpoint)",
    )


def test_apply_on_storage_that_cannot_be_reached_is_one_line_before_any_part(tmp_path: Path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    applied = run_cli(
        "apply",
        "--local",
        str(spec_file(tmp_path / "s.yaml", f"s3://{BUCKET}/down")),
        environment={
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_REGION": "us-east-1",
        },
    )
    assert applied.returncode == 2
    assert "Traceback" not in applied.stderr
    assert applied.stderr.strip().splitlines()[-1] == (  # after the experiment's heading
        f"error: storage s3://{BUCKET}/down: Could not connect to the endpoint URL: "
        f'"{endpoint}/{BUCKET}/down/experiments/failing/spec.yaml"'
    )


def test_storage_that_refuses_the_credentials(tmp_path: Path):
    with s3_bucket(tmp_path / "weed", BUCKET) as endpoint:
        result = run_part(
            "collect",
            spec_file(tmp_path / "s.yaml", f"s3://{BUCKET}/denied"),
            {**endpoint.environment(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"},
        )
    assert_one_line(
        result,
        f"collect part 0: storage s3://{BUCKET}/denied refused the credentials (Forbidden): check spec.storageSecret",
    )


@pytest.mark.parametrize("stage, reads", [("shards", "collect"), ("pretrain", "shards")])
def test_a_tree_without_the_earlier_stages_index(tmp_path: Path, stage: str, reads: str):
    storage = (tmp_path / "storage").as_uri()
    spec = spec_file(tmp_path / "s.yaml", storage)
    result = run_part(stage, spec)
    index = index_of(spec, reads)
    assert_one_line(
        result,
        f"{stage} part 0: no {reads} output to read: {index} is missing; run the {reads} stage "
        "first (`secoctl apply` runs the stages in order), or point spec.storage at the tree "
        "that holds it: check spec.storage",
    )


def test_under_torchrun_the_executor_still_finds_the_line_above_torchruns_own_report(tmp_path: Path):
    storage = tmp_path / "storage"
    executor = LocalExecutor(storage.as_uri())
    experiment = executor.prepare(
        load_documents(spec_file(tmp_path / "s.yaml", storage.as_uri()).read_text(), "s.yaml")[0]
    )
    with pytest.raises(StageFailed) as failed:
        executor.run_stage(experiment, plan.stage(experiment, "pretrain", single_machine=True))
    assert failed.value.message.startswith("pretrain part 0: no shards output to read: ")
    assert failed.value.message.endswith(": check spec.storage")


def test_a_dataset_that_is_not_at_its_data_path(tmp_path: Path):
    empty = tmp_path / "eurosat"
    empty.mkdir()
    spec = spec_file(
        tmp_path / "s.yaml",
        (tmp_path / "storage").as_uri(),
        evaluate=[{"task": "eurosat", "protocol": "linear", "dataPath": str(empty)}],
    )
    result = run_part("evaluate", spec)
    assert result.returncode == partlog.PREDICTABLE_EXIT, result.stderr
    message = partlog.failure_message(result.stdout.strip().splitlines()[-1])
    assert message.startswith(f"evaluate part 0: eurosat is not in {empty}: ")
    assert message.endswith(": check spec.evaluate[0].dataPath")


def test_a_bug_keeps_its_traceback_and_names_no_cause(tmp_path: Path):
    storage = (tmp_path / "storage").as_uri()
    spec = spec_file(tmp_path / "s.yaml", storage)
    index = Path(index_of(spec, "collect").removeprefix("file://"))
    index.parent.mkdir(parents=True)
    index.write_text('{"parts": "not a list"}')  # what no collect writes: the reader's bug, not the user's
    result = run_part("shards", spec)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert partlog.last_failure(result.stdout) is None


def test_in_a_pod_the_failure_line_is_the_termination_message_status_shows(tmp_path: Path):
    line = partlog.failure_line(
        "collect", 2, "STAC API http://stac.example not reachable (connection refused)", "spec.collect.stacUrl"
    )
    part = f"import sys; print('Traceback ...', file=sys.stderr); print({line!r}); sys.exit(3)"
    termination = tmp_path / "termination-log"
    assert run_logged((tmp_path / "collect").as_uri(), 2, [sys.executable, "-c", part], str(termination)) == 3
    assert termination.read_text() == line
    pod = {
        "metadata": {"name": "p", "labels": {"batch.kubernetes.io/job-completion-index": "2"}},
        "status": {
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": 3, "reason": "Error", "message": termination.read_text()}}}
            ]
        },
    }
    assert pod_reasons(pod) == [
        "collect part 2: STAC API http://stac.example not reachable (connection refused): check spec.collect.stacUrl"
    ]


def test_only_a_well_formed_bounded_failure_line_is_read():
    line = partlog.failure_line("collect", 0, "bad\x1b[31m\ncause", None)
    assert partlog.failure_message(line) == "collect part 0: bad [31m cause"
    assert partlog.failure_message('{"event": "failed", "message": 7}') is None
    assert partlog.failure_message('{"event": "failed", "message": "' + "x" * 5000 + '"}') is None
    assert partlog.failure_message(json.dumps({"event": "progress", "message": "m"})) is None
    assert partlog.last_failure("Traceback\n" + line + "\nlater output") == "collect part 0: bad [31m cause"
