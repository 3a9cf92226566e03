"""file:// storage on a disk that fills up while a stage writes: `apply --local` ends with one line naming
the full tree, and nothing the stage half wrote is left where a reader looks (no partial training shard,
no temporary, no part marker, no _SUCCESS)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from jobs.common.shards import read_shard, shard_entries
from jobs.common.training_shards import encode
from jobs.shards.stage import training_location
from secoctl import store
from secoctl.render import spec_document
from secoctl.stored import named_stage_tree
from tests.conftest import run_cli
from tests.pretrain.made_data import collected_experiment

SPEC = """apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {name: tiny}
spec:
  collect: {source: stac, workers: 1, bands: [B04, B03, B02]}
  pretrain: {backbone: resnet18, nodes: 1, gpusPerNode: 0, batchSize: 8}
"""


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 16 MiB tmpfs of its own, so that filling it touches nothing else."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; this test runs as an ordinary user")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_is_one_line_and_leaves_no_committed_partial_output(small_disk: Path, tmp_path: Path):
    storage = (small_disk / "seco").as_uri()
    experiment, root = collected_experiment(storage, SPEC)
    expected = {
        entry["uri"].rsplit("/", 1)[1]: encode(
            [training_location(s, experiment.spec.input_bands()) for s in read_shard(entry["uri"])]
        )
        for entry in shard_entries(store.read_json(named_stage_tree(experiment, "collect").index))
    }
    sizes = [len(expected[name]) for name in sorted(expected)]
    room = sizes[0] + sizes[1] // 2 + 64 * 1024  # the first shard, its log and progress fit; the second does not
    spec = tmp_path / "tiny.yaml"
    spec.write_text(spec_document(experiment))
    (small_disk / "ballast").write_bytes(bytes(shutil.disk_usage(small_disk).free - room))

    applied = run_cli("apply", "--local", str(spec), timeout=300)
    assert applied.returncode == 1 and "Traceback" not in applied.stderr, applied.stderr
    assert (
        applied.stderr.strip()
        .splitlines()[-1]
        .startswith(  # after the experiment's heading and progress
            f"shards part 0: storage {storage} is full: no space left on its disk for {small_disk}/seco/"
        )
    ), applied.stderr

    tree = Path(named_stage_tree(experiment, "shards").uri.removeprefix("file://"))
    assert not (tree / "_SUCCESS").exists() and not (tree / "parts" / "00000.json").exists()
    written = {path.name: path.read_bytes() for path in (tree / "data").iterdir()} if (tree / "data").exists() else {}
    assert 0 < len(written) < len(expected)
    assert all(written[name] == expected[name] for name in written)  # whole, or not there at all
    assert not [path for path in (small_disk / "seco").rglob("*.tmp")]
