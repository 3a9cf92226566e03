"""Charts a person reads: a pretrain stage's curves (matplotlib is imported only here).

Per-step losses are noisy, so each is drawn smoothed (an exponential moving average, as
TensorBoard's slider does) over its raw values, faint. Legends sit below the axes, off the data.
The collapse panel shows each sub-space's embedding std against 1/sqrt(dim) and the alarm's line
(secoctl.collapse).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from secoctl import collapse

SMOOTHING = 0.6  # the EMA's weight on the past, TensorBoard's default
RAW_ALPHA = 0.25
# Why a short run's loss climbs: each step's negatives are the queue, random unit vectors at first (easy: nearly
# orthogonal to every query) that the keys of past batches replace (harder: from the same encoder).
QUEUE_NOTE = (
    "MoCo-style InfoNCE against a queue of negatives: it rises while the queue fills\n"
    "with real keys in place of random ones; the collapse panel and the probe show learning"
)
SUBSPACE_NAMES = {
    "0": "Z0: season + augmentation invariant",
    "1": "Z1: season invariant",
    "2": "Z2: augmentation invariant",
}


def parse_metrics(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def ema(values: list[float], smoothing: float = SMOOTHING) -> list[float]:
    """Exponential moving average, debiased at the start (as TensorBoard's) so it does not rise from 0."""
    smoothed, average = [], 0.0
    for number, value in enumerate(values, start=1):
        average = smoothing * average + (1 - smoothing) * value
        smoothed.append(average / (1 - smoothing**number))
    return smoothed


def _curve(axes, steps: list[int], values: list[float], label: str, color: str) -> None:
    axes.plot(steps, values, color=color, alpha=RAW_ALPHA, linewidth=0.8)
    axes.plot(steps, ema(values), color=color, label=label, linewidth=1.6)


def _legend_below(axes, title: str | None = None) -> None:
    axes.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        fontsize="small",
        frameon=False,
        title=title,
        title_fontsize="small",
    )


def loss_curves(records: list[dict], title: str, output: Path, embedding_dim: int) -> Path:
    from matplotlib import pyplot as plt

    figure = curves_figure(records, title, embedding_dim)
    figure.savefig(output, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return output


def curves_figure(records: list[dict], title: str, embedding_dim: int):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    steps = [r["step"] for r in records]
    figure, (losses, health, rate) = plt.subplots(1, 3, figsize=(15, 4.8))
    colors = [f"C{i}" for i in range(10)]
    subspaces = sorted(k.removeprefix("loss_") for k in records[0] if k.startswith("loss_"))
    for key, color in zip(subspaces, colors):
        label = SUBSPACE_NAMES.get(key, key) if len(subspaces) > 1 else "InfoNCE"
        _curve(losses, steps, [r[f"loss_{key}"] for r in records], label, color)
    losses.set(xlabel="step", ylabel="loss", title=title)
    _legend_below(losses, QUEUE_NOTE)

    with_health = [r for r in records if collapse.lowest_std(r) is not None]  # absent before issue 29
    for key, color in zip(subspaces, colors):
        values = [r[f"{collapse.PREFIX}{key}"] for r in with_health if f"{collapse.PREFIX}{key}" in r]
        if values:
            _curve(health, [r["step"] for r in with_health], values, f"embedding std, {key}", color)
    health.axhline(1 / math.sqrt(embedding_dim), color="black", linestyle=":", label="1/sqrt(dim): spread")
    health.axhline(collapse.threshold(embedding_dim), color="tab:red", linestyle="--", label="collapse alarm")
    health.set(xlabel="step", ylabel="std of normalised embeddings", title="collapse", ylim=(0, None))
    _legend_below(health)

    rate.plot(steps, [r["samples_per_s"] for r in records], color="tab:gray", alpha=RAW_ALPHA, linewidth=0.8)
    rate.plot(steps, ema([r["samples_per_s"] for r in records]), color="tab:gray")
    rate.set(xlabel="step", ylabel="samples/s", title="throughput")
    figure.tight_layout()
    return figure


def draw_stored(storage: str, name: str, output: Path | None) -> Path:
    """`secoctl plot`: the stored experiment's pretrain metrics drawn into `output` (default NAME-loss.png)."""
    from secoctl import store
    from secoctl.errors import UserError
    from secoctl.stored import named
    from secoctl.tree import StageTree

    root, experiment = named(storage, name)
    metrics = StageTree(root, "pretrain").metrics
    try:
        records = parse_metrics(store.read_text(metrics))
    except FileNotFoundError:
        records = []
    if not records:
        raise UserError(f"{name} has no pretrain metrics yet ({metrics}); they appear every few steps")
    return loss_curves(
        records, f"{name}: pretrain loss", output or Path(f"{name}-loss.png"), experiment.spec.pretrain.embedding_dim
    )
