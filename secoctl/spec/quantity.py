"""Kubernetes resource quantities as numbers, for the sizes render and validate derive from the spec."""

from __future__ import annotations

from secoctl.spec import k8s_rules


def to_bytes(quantity: str) -> int:
    """'20Gi' -> 21474836480, by the API server's grammar; the spec's Resources validator has admitted the form."""
    amount = k8s_rules.quantity(quantity)
    if amount is None:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    return int(amount)


def gibibytes(count: int) -> str:
    """A byte count as the smallest whole Gi quantity that holds it."""
    return f"{-(-count // 2**30)}Gi"


# Of a pretrain pod's local disk (its /tmp, resources.ephemeralStorage), what the shard cache may fill;
# the rest is left to torch's compile caches and the like, so the kubelet never evicts the pod for it.
CACHE_SHARE = 0.8


def cache_budget(ephemeral_storage: str) -> int:
    return int(CACHE_SHARE * to_bytes(ephemeral_storage))
