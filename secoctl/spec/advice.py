"""What a valid spec will cost that its author may not expect: warned about, never refused.

Pure: a spec in, warning lines out; `validate`, `render` and `apply` print them on stderr.
"""

from __future__ import annotations

from secoctl.spec.quantity import CACHE_SHARE, cache_budget, gibibytes
from secoctl.spec import Experiment
from secoctl.training_data import epoch_bytes_per_node


def cache_warning(experiment: Experiment) -> str | None:
    """Each pretrain node keeps the training shards it reads on its local disk, so later epochs never
    touch storage; a smaller cache still trains, but fetches part of every epoch again."""
    spec = experiment.spec
    need = epoch_bytes_per_node(spec.collect.locations, spec.collect.timestamps, spec.collect.patch_size,
                                spec.pretrain.nodes, len(spec.input_bands()))
    have = cache_budget(spec.pretrain.resources.ephemeral_storage)
    if need <= have:
        return None
    return (f"spec.pretrain.resources.ephemeralStorage: {spec.pretrain.resources.ephemeral_storage} leaves "
            f"{have / 2**30:.1f} GiB to cache training shards, but a node reads {need / 2**30:.1f} GiB an epoch "
            f"({spec.collect.locations} locations over {spec.pretrain.nodes} node(s)), so every epoch reads "
            f"storage again: set it to at least {gibibytes(int(need / CACHE_SHARE) + 1)} or add nodes")


def warnings(experiment: Experiment) -> list[str]:
    return [line for line in (cache_warning(experiment),) if line]
