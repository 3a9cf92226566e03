"""A STAC API that cannot be reached, or answers only errors, ends `apply` with one line naming spec.collect.stacUrl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.localcloud.cloud import serve
from jobs.localcloud.servers import free_port
from secoctl import store
from secoctl.backends.local.executor import StageFailed
from secoctl.partlog import PREDICTABLE_EXIT
from tests.collect.conftest import SPEC, experiment_for, run_collect
from tests.conftest import run_cli


def test_an_unreachable_stac_api_is_one_line_and_the_traceback_stays_in_the_log(storage: Path, tmp_path: Path):
    stac_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spec = tmp_path / "collect.yaml"
    spec.write_text(SPEC.format(source="stac", stac_url=stac_url, per_shard=3, workers=1, in_flight=2))

    applied = run_cli("apply", "--local", str(spec), storage=storage)

    line = f"collect part 0: STAC API {stac_url} not reachable (connection refused): check spec.collect.stacUrl"
    assert applied.returncode == 1
    assert applied.stderr.strip().splitlines()[-1] == line
    assert "Traceback" not in applied.stderr and "Traceback" not in applied.stdout
    logs = run_cli("logs", "collect-test", "--stage", "collect", storage=storage)
    assert logs.returncode == 0, logs.stderr
    assert "Traceback (most recent call last)" in logs.stdout and "ConnectionRefusedError" in logs.stdout
    status = run_cli("status", "collect-test", "-o", "json", storage=storage)
    collect_row = next(row for row in json.loads(status.stdout) if row["stage"] == "collect")
    assert collect_row["state"] == "failed" and line in json.dumps(collect_row)


def test_a_stac_api_answering_500_is_one_line_naming_the_field(world_folder: Path, storage: Path):
    errors = [{"path": "", "action": "status", "status": 500, "times": 1000}]
    with serve(world_folder, stac_faults=errors) as cloud:
        with pytest.raises(StageFailed) as failed:
            run_collect(experiment_for(cloud.stac_url, workers=1), storage)
    assert failed.value.exit_code == PREDICTABLE_EXIT
    assert failed.value.message == (
        f"collect part 0: STAC API {cloud.stac_url} kept answering errors "
        "(too many 500 error responses): check spec.collect.stacUrl"
    )
    assert "Traceback" in store.read_text(failed.value.log_location)  # the story, for `secoctl logs`
