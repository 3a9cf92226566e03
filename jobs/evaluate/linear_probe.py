"""EuroSAT linear probe (reference main_eurosat.py): frozen backbone, one linear layer on pooled
features, Adam, lr × 0.1 at 60% and 80% of the epochs; top-1 accuracy on the test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from jobs.common.backbone import ReflectanceInput
from secoctl.model_card import RGB_BANDS, input_description

BATCH = 256


class DatasetError(RuntimeError):
    """A missing or unreadable dataset file; the message names it and how to fetch the data."""


def eurosat_split(root: str, split: str, download: bool):
    from torchgeo.datasets import DatasetNotFoundError, EuroSAT

    try:
        return EuroSAT(root, split=split, bands=RGB_BANDS, download=download)
    except DatasetNotFoundError as error:
        raise DatasetError(f"EuroSAT is not in {root}: {error} Set evaluate[].dataPath to an extracted copy, "
                           "or leave dataPath empty on a machine that can reach hf.co to download it") from None


@torch.no_grad()
def features(backbone: nn.Module, dataset, transform: ReflectanceInput, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    backbone.eval().to(device)
    pooled, labels = [], []
    loader = DataLoader(range(len(dataset)), batch_size=BATCH)
    for indices in loader:
        images, targets = [], []
        for index in indices.tolist():
            try:
                sample = dataset[index]
            except Exception as error:  # noqa: BLE001 - name the file whatever the reader raised
                path = dataset.samples[index][0] if hasattr(dataset, "samples") else f"sample {index}"
                raise DatasetError(f"cannot read {path}: {error}. Re-extract the dataset or delete it to "
                                   "download it again") from None
            images.append(sample["image"])
            targets.append(int(sample["label"]))
        batch = transform(torch.stack(images).to(device))
        pooled.append(backbone(batch).float().cpu())
        labels.append(torch.tensor(targets))
    return torch.cat(pooled), torch.cat(labels)


@dataclass
class LinearProbe:
    """A linear layer on standardised features (mean and std of the training features)."""

    head: nn.Linear
    mean: torch.Tensor
    std: torch.Tensor

    @torch.no_grad()
    def accuracy(self, data: tuple[torch.Tensor, torch.Tensor]) -> float:
        x, y = data
        return float((self.head((x - self.mean) / self.std).argmax(1) == y).float().mean())


def train_linear(train: tuple[torch.Tensor, torch.Tensor], classes: int, epochs: int, seed: int = 0) -> LinearProbe:
    torch.manual_seed(seed)
    x, y = train
    mean, std = x.mean(0, keepdim=True), x.std(0, keepdim=True) + 1e-6
    head = nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(0.6 * epochs), int(0.8 * epochs)], 0.1)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(BATCH):
            loss = nn.functional.cross_entropy(head((x[batch] - mean) / std), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    return LinearProbe(head, mean, std)


def evaluate(backbone: nn.Module, root: str, download: bool, input_size: int, epochs: int,
             label_fraction: float) -> dict[str, float]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    described = input_description(input_size)
    transform = ReflectanceInput([described["stretch"][b] for b in RGB_BANDS], described["mean"], described["std"],
                                 input_size).to(device)
    splits = {split: features(backbone, eurosat_split(root, split, download), transform, device)
              for split in ("train", "val", "test")}
    x, y = splits["train"]
    if label_fraction < 1:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[: max(int(len(x) * label_fraction), 1)]
        x, y = x[keep], y[keep]
    probe = train_linear((x, y), int(splits["train"][1].max()) + 1, epochs)
    return {"accuracy": probe.accuracy(splits["test"]), "val_accuracy": probe.accuracy(splits["val"]),
            "train_samples": len(x), "test_samples": len(splits["test"][1])}


def dataset_root(data_path: str | None, storage_cache: Path) -> tuple[str, bool]:
    """(root, may download): a given dataPath is used as is; otherwise a cache that torchgeo fills."""
    if data_path:
        return data_path.removeprefix("file://"), False
    return str(storage_cache / "eurosat"), True
