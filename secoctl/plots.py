"""Charts a person reads: loss curves of a pretrain stage (matplotlib is imported only here)."""

from __future__ import annotations

import json
from pathlib import Path


def parse_metrics(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def loss_curves(records: list[dict], title: str, output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    steps = [r["step"] for r in records]
    figure, (losses, rate) = plt.subplots(1, 2, figsize=(11, 4))
    subspaces = sorted(k for k in records[0] if k.startswith("loss_"))
    names = {"loss_0": "Z0: season + augmentation invariant", "loss_1": "Z1: season invariant",
             "loss_2": "Z2: augmentation invariant"}
    for key in subspaces:
        losses.plot(steps, [r[key] for r in records], label=names.get(key, key) if len(subspaces) > 1 else "InfoNCE")
    losses.set(xlabel="step", ylabel="loss", title=title)
    losses.legend()
    rate.plot(steps, [r["samples_per_s"] for r in records], color="tab:gray")
    rate.set(xlabel="step", ylabel="samples/s", title="throughput")
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return output
