"""The training-shards stage: each collected shard becomes one training shard, once.

A stage of its own, not a step inside collect: collect keeps the record (every band, uint16) and
can take hours of API calls, while what the model reads (which bands, which stretch) belongs to
pre-training and may change (issue 30 adds input bands) without collecting again. CPU pods, one
per collect worker; part i converts every parts-th collected shard. A training shard is written
whole and committed by its name, so a re-run converts only what is missing.
"""

from __future__ import annotations

from typing import Any

from jobs.common.part import Part
from jobs.common.shards import Sample, read_shard, shard_entries
from jobs.common.training_shards import Location, encode
from jobs.pretrain.views import STRETCH, input_uint8
from secoctl import store


def training_location(sample: Sample, input_bands: list[str]) -> Location:
    """Each input band's stretch to uint8 (views.STRETCH); the record's metadata travels along."""
    pixels = input_uint8(sample.pixels, sample.metadata["bands"], input_bands)
    metadata = {
        "bands": list(input_bands),
        "stretch": {band: list(STRETCH[band]) for band in input_bands},
        "source": {key: sample.metadata[key] for key in ("dates", "scene_ids", "location") if key in sample.metadata},
    }
    return Location(sample.key, pixels, metadata)


def work(part: Part) -> dict[str, Any]:
    collected = shard_entries(part.input_index("collect"))
    mine = collected[part.index :: part.parts]
    input_bands = part.experiment.spec.input_bands()
    shards = []
    for done, entry in enumerate(mine):
        uri = part.tree.path("data", entry["uri"].rsplit("/", 1)[-1])
        if not store.exists(uri):
            store.write_bytes(
                uri, encode([training_location(sample, input_bands) for sample in read_shard(entry["uri"])])
            )
        shards.append({"uri": uri, "samples": entry["samples"], "keys": entry["keys"]})
        # The last report is forced: a throttled one would leave status an early count for good.
        part.progress(done + 1, len(mine), "shards", force=done + 1 == len(mine), counts=("shards",), shards=done + 1)
    return {"shards": shards}
