"""When a contrastive run is collapsing, though its loss may still fall (torchgeo#3998).

Every logged pretrain step records, per sub-space, `embed_std_<i>`: the std across the batch of
each dimension of the L2-normalised query embeddings, averaged over dimensions. Embeddings spread
over the sphere give about 1/sqrt(dim); every sample mapped to the same point gives 0.

The alarm: the lowest sub-space's std below THRESHOLD_FRACTION / sqrt(dim) (0.0088 at the default
dim of 128) for ALARM_LOGS logs in a row (100 steps of 10-step windows). A run that stays there
has stopped telling its samples apart; a dip early on is not that. Measured (dim 128, batch 32): a
quickstart's checkpoints give 0.035-0.038 at initialisation, 0.021-0.052 at steps 100-300; a
quickstart-sized run on the tests' made cubes logged 0.016, 0.005, 0.004 (its lowest sub-space) over
its first 30 steps (stopped there), so a few low windows alone do not raise the alarm.

The pod counts the run (it holds the history, across resumes); `status` reads the count from its
progress record.
"""

from __future__ import annotations

import math
from typing import Any

THRESHOLD_FRACTION = 0.1
ALARM_LOGS = 10
PREFIX = "embed_std_"


def threshold(dim: int) -> float:
    return THRESHOLD_FRACTION / math.sqrt(dim)


def lowest_std(record: dict[str, Any]) -> float | None:
    """The lowest sub-space's embedding std in one metrics record; None in records from before it."""
    values = [v for k, v in record.items() if k.startswith(PREFIX)]
    return min(values) if values else None


def low_logs(history: list[dict[str, Any]], dim: int) -> int:
    """How many of the latest records in a row have a sub-space's std below the threshold."""
    count = 0
    for record in reversed(history):
        std = lowest_std(record)
        if std is None or std >= threshold(dim):
            break
        count += 1
    return count


def alarm(metrics: dict[str, Any]) -> str:
    """`collapsing?` with the figure, once a stage's progress metrics say the std stayed low; else ''."""
    if metrics.get("embed_std_low_logs", 0) < ALARM_LOGS:
        return ""
    return f"collapsing? embed_std={metrics['embed_std']:.2g}"
