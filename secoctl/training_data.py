"""How big the training shards of a spec are: what validate checks the pretrain nodes' caches against.

The format is jobs/common/training_shards.py's: per location, each timestamp's input bands as raw
uint8, each in a tar member of its own (a 512-byte header, the data padded to 512), plus a small
JSON member; the bound below counts that overhead generously.
"""

from __future__ import annotations

from secoctl.model_card import RGB_BANDS

MEMBER_OVERHEAD = 1024  # a tar header and at most a block of padding


def bytes_per_location(timestamps: int, patch_size: int, bands: int = len(RGB_BANDS)) -> int:
    return timestamps * (bands * patch_size**2 + MEMBER_OVERHEAD) + 2 * MEMBER_OVERHEAD


def epoch_bytes_per_node(
    locations: int, timestamps: int, patch_size: int, nodes: int, bands: int = len(RGB_BANDS)
) -> int:
    """Each node's ranks read 1/nodes of the shards an epoch, so that is what its cache must hold."""
    return -(-locations // nodes) * bytes_per_location(timestamps, patch_size, bands)
