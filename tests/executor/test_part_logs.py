"""A stage part's log kept in storage by `jobs.common.logged`, as a pod runs it, on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs.common.logged import StorageLog
from secoctl import partlog, store
from secoctl.spec.file import read_experiment
from secoctl.stored import named_stage_tree
from tests.s3 import s3_bucket

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "seco-logs"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_bucket(tmp_path_factory.mktemp("weed"), BUCKET) as endpoint:
        yield endpoint


def spec(path: Path, name: str, storage: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "seco.dev/v1alpha1",
                "kind": "Experiment",
                "metadata": {"name": name},
                "spec": {
                    "storage": storage,
                    "image": "registry.example/secoctl:test",
                    "collect": {"source": "stac", "stacUrl": "http://stac.example", "locations": 8, "workers": 2},
                    "pretrain": {"backbone": "resnet18", "batchSize": 16, "maxSteps": 10},
                },
            }
        )
    )
    return path


def test_a_part_run_as_a_pod_runs_it_keeps_its_output_and_exit_code_and_leaves_its_log_in_storage(s3, tmp_path):
    storage = f"s3://{BUCKET}/wrapped"
    part = "import sys; print('shard 0 committed'); print('oops', file=sys.stderr); sys.exit(3)"
    spec_path = spec(tmp_path / "s.yaml", "wrapped", storage)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.common.logged",
            "--spec",
            str(spec_path),
            "--stage",
            "collect",
            "--",
            sys.executable,
            "-c",
            part,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=dict(os.environ, JOB_COMPLETION_INDEX="1", PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == 3, result.stderr  # the Job must see the part's own exit code
    assert result.stdout.splitlines() == ["shard 0 committed", "oops"]  # still the container's log
    stage_uri = named_stage_tree(read_experiment(str(spec_path)), "collect").uri  # the dataset's folder
    assert partlog.indexes(stage_uri) == [1]
    assert partlog.read(stage_uri, 1) == "shard 0 committed\noops\n"


def test_a_part_killed_by_a_signal_exits_128_plus_the_signal(tmp_path):
    from jobs.common.logged import run

    killed = "import os, signal; print('stopping', flush=True); os.kill(os.getpid(), signal.SIGTERM)"
    stage_uri = (tmp_path / "collect").as_uri()
    assert run(stage_uri, 0, [sys.executable, "-c", killed]) == 128 + signal.SIGTERM
    assert partlog.read(stage_uri, 0) == "stopping\n"


def test_a_long_log_is_sealed_in_chunks_read_back_in_order(s3):
    stage_uri = f"s3://{BUCKET}/chunked/pretrain"
    log = StorageLog(stage_uri, 2, chunk_bytes=64)
    lines = [f"step {i:04d} loss {1 / (i + 1):.6f}\n".encode() for i in range(40)]
    for line in lines:
        log.write(line)
    log.flush()
    names = store.list_names(store.join(stage_uri, "logs"))
    chunks = [n for n in names if n.count(".") == 2]
    assert len(chunks) >= 10 and "00002.log" in names
    # Every chunk is whole lines and at most a chunk long; no upload grew with the run.
    for name in chunks:
        data = store.read_bytes(store.join(stage_uri, "logs", name))
        assert data.endswith(b"\n") and len(data) <= 64
    assert partlog.read(stage_uri, 2) == b"".join(lines).decode()


def test_a_later_pod_of_the_same_part_continues_the_log_after_the_earlier_pods(s3):
    """A pod readmitted after a Kueue preemption (or a retry) must not overwrite the log of the pod it
    replaces: that log's last lines say where the preempted run stopped."""
    from jobs.common.logged import run

    stage_uri = f"s3://{BUCKET}/readmitted/pretrain"
    earlier = StorageLog(stage_uri, 0, chunk_bytes=64)
    for i in range(6):
        earlier.write(f"step {i:04d} of the preempted pod\n".encode())
    earlier.flush()
    first = partlog.read(stage_uri, 0)
    assert run(stage_uri, 0, [sys.executable, "-c", "print('resumed')"]) == 0
    assert partlog.read(stage_uri, 0) == first + "resumed\n"
    assert run(stage_uri, 0, [sys.executable, "-c", "print('once more')"]) == 0
    assert partlog.read(stage_uri, 0) == first + "resumed\nonce more\n"
