"""Kubernetes resource quantities as numbers, for the sizes render and validate derive from the spec."""

from __future__ import annotations

import re

_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def to_bytes(quantity: str) -> int:
    """'20Gi' -> 21474836480; the spec's Resources validator has already admitted the form."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?", quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    return int(float(match.group(1)) * _SUFFIX[match.group(2) or ""])


def gibibytes(count: int) -> str:
    """A byte count as the smallest whole Gi quantity that holds it."""
    return f"{-(-count // 2**30)}Gi"


# Of a pretrain pod's local disk (its /tmp, resources.ephemeralStorage), what the shard cache may fill;
# the rest is left to torch's compile caches and the like, so the kubelet never evicts the pod for it.
CACHE_SHARE = 0.8


def cache_budget(ephemeral_storage: str) -> int:
    return int(CACHE_SHARE * to_bytes(ephemeral_storage))
