"""A collected experiment made in the tests: seasonal uint16 cubes in the collect stage's shards,
and where a test starts pretrain itself, the training shards derived from them by the real stage."""

from __future__ import annotations

import os
import time

import numpy as np

from jobs.common.shards import Sample, write_shard
from secoctl import plan, store
from secoctl.render import spec_document
from secoctl.spec.file import load_documents
from secoctl.stored import named_stage_tree
from secoctl.tree import commit_stage, experiment_uri, spec_uri


def seasonal_cube(rng: np.random.Generator, timestamps: int, size: int) -> np.ndarray:
    """One location: a fixed layout of land-cover blobs whose reflectance changes with the season."""
    layout = rng.integers(0, 4, (size // 8, size // 8)).repeat(8, 0).repeat(8, 1)
    base = np.array([[400, 700, 500], [900, 1100, 800], [2500, 2300, 2000], [300, 300, 1200]])
    cube = np.empty((timestamps, 3, size, size), np.uint16)
    for t in range(timestamps):
        season = 1 + 0.35 * np.sin(2 * np.pi * t / 4)
        cube[t] = (base[layout].transpose(2, 0, 1) * season + rng.normal(0, 40, (3, size, size))).clip(0, 10_000)
    return cube


def derived_training_shards(experiment, root: str) -> None:
    """Run the training-shards stage's one part in this process and commit it, as the executor would."""
    from jobs.common.part import run
    from jobs.shards.stage import work

    previous = os.environ.get("SECOCTL_PARTS")
    os.environ["SECOCTL_PARTS"] = "1"
    try:
        run("shards", work, ["--spec", spec_uri(root)])
    finally:
        os.environ.pop("SECOCTL_PARTS") if previous is None else os.environ.update(SECOCTL_PARTS=previous)
    shards = plan.stage(experiment, "shards", single_machine=True)
    commit_stage(named_stage_tree(experiment, "shards"), shards.fingerprint, 1)


def collected_experiment(
    storage_uri: str,
    spec_text: str,
    locations: int = 24,
    per_shard: int = 6,
    size: int = 40,
    training_shards: bool = False,
):
    experiment = load_documents(spec_text, "made.yaml")[0].with_storage(storage_uri)
    root = experiment_uri(storage_uri, experiment.name)
    store.write_text(spec_uri(root), spec_document(experiment))
    tree = named_stage_tree(experiment, "collect")
    rng = np.random.default_rng(0)
    shards = []
    for first in range(0, locations, per_shard):
        samples = [
            Sample(
                f"{i:06d}",
                seasonal_cube(rng, experiment.spec.collect.timestamps, size),
                {"bands": ["B04", "B03", "B02"]},
            )
            for i in range(first, first + per_shard)
        ]
        shards.append(write_shard(tree.path("shards", f"{first // per_shard:05d}.tar"), samples))
    store.write_json(tree.index, {"stage": "collect", "parts": [{"index": 0, "summary": {"shards": shards}}]})
    store.write_json(
        tree.success,
        {
            "fingerprint": plan.stage(experiment, "collect", single_machine=True).fingerprint,
            "completed_at": time.time(),
            "parts": 1,
        },
    )
    if training_shards:
        derived_training_shards(experiment, root)
    return experiment, root
