"""What a valid spec will cost that its author may not expect: warned about, never refused.

Pure: a spec in, warning lines out; `validate`, `render` and `apply` print them on stderr.
"""

from __future__ import annotations

from secoctl.spec import Experiment
from secoctl.spec.quantity import CACHE_SHARE, cache_budget, gibibytes, to_bytes
from secoctl.training_data import bytes_per_location, epoch_bytes_per_node


def cache_warning(experiment: Experiment) -> str | None:
    """Each pretrain node keeps the training shards it reads on its local disk, so later epochs never
    touch storage; a smaller cache still trains (jobs.pretrain.shard_cache never evicts a shard fetched
    ahead and not yet read), but fetches part of every epoch again."""
    spec = experiment.spec
    need = epoch_bytes_per_node(
        spec.collect.locations,
        spec.collect.timestamps,
        spec.collect.patch_size,
        spec.pretrain.nodes,
        len(spec.input_bands()),
    )
    have = cache_budget(spec.pretrain.resources.ephemeral_storage)
    if need <= have:
        return None
    return (
        f"spec.pretrain.resources.ephemeralStorage: {spec.pretrain.resources.ephemeral_storage} leaves "
        f"{have / 2**30:.1f} GiB to cache training shards, but a node reads {need / 2**30:.1f} GiB an epoch "
        f"({spec.collect.locations} locations over {spec.pretrain.nodes} node(s)), so every epoch reads "
        f"storage again: set it to at least {gibibytes(int(need / CACHE_SHARE) + 1)} or add nodes"
    )


def fetch_ahead_warning(experiment: Experiment) -> str | None:
    """The shards each rank has fetched ahead and not yet read stay on the node's disk whatever the cache's
    budget: when they alone outgrow ephemeralStorage, the kubelet evicts the pod."""
    spec = experiment.spec
    shard = spec.collect.samples_per_shard * bytes_per_location(
        spec.collect.timestamps, spec.collect.patch_size, len(spec.input_bands())
    )
    ranks, ahead = max(spec.pretrain.gpus_per_node, 1), spec.pretrain.loader_workers + 1
    need, have = ranks * ahead * shard, to_bytes(spec.pretrain.resources.ephemeral_storage)
    if need <= have:
        return None
    return (
        f"spec.pretrain.loaderWorkers: {ranks} rank(s) a node, each holding {ahead} training shards of "
        f"{shard / 2**30:.2f} GiB it fetched ahead, need {need / 2**30:.1f} GiB of local disk, more than "
        f"spec.pretrain.resources.ephemeralStorage {spec.pretrain.resources.ephemeral_storage}: lower "
        f"loaderWorkers or spec.collect.samplesPerShard, or set ephemeralStorage to at least "
        f"{gibibytes(need + 1)}"
    )


def warnings(experiment: Experiment) -> list[str]:
    return [line for line in (cache_warning(experiment), fetch_ahead_warning(experiment)) if line]


def publish_clash(experiment: Experiment, local_only: bool = False) -> list[str]:
    """The weights version this spec would publish, already published by another experiment: found before any
    stage runs, not at publish after hours. `local_only` (validate) looks only at a file:// storage; a storage
    this machine cannot read yet (no bucket, no credentials) is left to the stages, which say why."""
    publish = experiment.spec.publish
    if publish is None or publish.force:
        return []
    from secoctl import store
    from secoctl.weights.published import taken_by_another

    try:
        storage, _ = store.resolve(None, experiment.spec.storage, experiment.name)
        if local_only and not storage.startswith("file://"):
            return []
        owner = taken_by_another(storage, publish.name, publish.version, experiment.name)
    except Exception:  # noqa: BLE001 - any storage failure: nothing known about what is published there
        return []
    if owner is None:
        return []
    return [
        f"{experiment.name}: spec.publish: weights {publish.name}:{publish.version} are already published in "
        f"{storage} by {owner}; versions are immutable: set spec.publish.version to a new version, or "
        "spec.publish.force: true to replace it"
    ]
