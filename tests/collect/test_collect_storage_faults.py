"""The collect stage writing to S3 that answers 500/503, resets connections and stalls: it completes, and
its shards are byte for byte a clean run's."""

from __future__ import annotations

from pathlib import Path

import pytest
import s3fs

from jobs.localcloud.cloud import serve
from secoctl import plan
from secoctl.backends.local.executor import LocalExecutor
from secoctl.stored import named_stage_tree
from tests.collect.conftest import experiment_for
from tests.s3 import s3_bucket
from tests.storage_faults import s3_behind_faults, write_faults

BUCKET = "seco-collect-faults"
# the shards, each chunk's record (it commits the chunk's shard) and the parts' markers
# the collect dataset's folder, datasets/collect-<fingerprint>
FAULTS = [
    *write_faults(r"/collect-[0-9a-f]+/shards/"),
    *write_faults(r"/collect-[0-9a-f]+/chunks/"),
    *write_faults(r"/collect-[0-9a-f]+/parts/"),
]


@pytest.mark.slow
def test_collect_completes_under_storage_faults_with_a_clean_runs_shards(world_folder: Path, tmp_path_factory):
    committed = {}
    with serve(world_folder) as cloud, s3_bucket(tmp_path_factory.mktemp("weed"), BUCKET) as endpoint:
        for run in ("clean", "faulty"):
            executor = LocalExecutor(f"s3://{BUCKET}/{run}")
            experiment = executor.prepare(experiment_for(cloud.stac_url))
            with s3_behind_faults(endpoint, FAULTS if run == "faulty" else []):
                executor.run_stage(experiment, plan.stage(experiment, "collect", single_machine=True))
            fs = s3fs.S3FileSystem(skip_instance_cache=True)
            shards = fs.find(named_stage_tree(experiment, "collect").path("shards").removeprefix("s3://"))
            committed[run] = {path.rsplit("/", 1)[1]: fs.cat_file(path) for path in shards}
    assert len(committed["clean"]) > 1
    assert committed["faulty"] == committed["clean"]
