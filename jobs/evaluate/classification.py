"""Scene classification protocols: EuroSAT (single-label, top-1) and BigEarthNet (19 labels, micro mAP).

`paper(backbone, setting)` and `modern(backbone, setting)` are the recipes' entries (jobs.evaluate.stage.RECIPES);
both train with jobs.evaluate.training's loop.

recipe paper: `eurosat_paper` follows main_eurosat.py, `bigearthnet_paper` main_bigearthnet.py with
models/ssl_finetuner.py (see their docstrings).

recipe modern: linear probe (reference main_eurosat / main_bigearthnet --freeze_backbone): pooled features of the
frozen backbone are extracted once, a linear layer is trained on them. Fine-tuning (BigEarthNet
without --freeze_backbone): backbone and layer are trained together, with flips. Both use Adam with
lr × 0.1 at 60% and 80% of the epochs, as the reference's EuroSAT schedule does: 1e-3 for a probe,
1e-4 when the backbone trains too (our choice, so that pre-trained features are not washed out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from jobs.common.backbone import ReflectanceInput
from jobs.evaluate import datasets
from jobs.evaluate.training import Setting, Training, at_60_and_80_percent, fit, record, steps_at

BATCH = 256
FINETUNE_BATCH = 64
PROBE_LR, FINETUNE_LR = 1e-3, 1e-4
MULTI_LABEL = {"eurosat": False, "bigearthnet": True}


@torch.no_grad()
def predict(
    model: nn.Module, task: str, dataset, transform: ReflectanceInput, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs (pooled features of a backbone, logits of a classifier) and the targets."""
    model.eval().to(device)
    outputs, targets = [], []
    for batch in datasets.batches(task, dataset, BATCH):
        outputs.append(model(transform(batch["image"].to(device))).float().cpu())
        targets.append(batch["target"])
    return torch.cat(outputs), torch.cat(targets)


def loss_fn(multi_label: bool):
    if multi_label:
        return lambda logits, target: nn.functional.binary_cross_entropy_with_logits(logits, target.float())
    return nn.functional.cross_entropy


def score(logits: torch.Tensor, target: torch.Tensor, multi_label: bool) -> dict[str, float]:
    if not multi_label:
        return {"accuracy": float((logits.argmax(1) == target).float().mean())}
    from torchmetrics.functional.classification import multilabel_average_precision

    labels = target.shape[1]
    return {
        "mAP": float(multilabel_average_precision(logits, target.long(), labels, average="micro")),
        "mAP_macro": float(multilabel_average_precision(logits, target.long(), labels, average="macro")),
    }


@dataclass
class LinearProbe:
    """A linear layer on standardised features (mean and std of the training features)."""

    head: nn.Linear
    mean: torch.Tensor
    std: torch.Tensor

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x - self.mean) / self.std)


def train_linear(
    train: tuple[torch.Tensor, torch.Tensor], outputs: int, epochs: int, multi_label: bool, seed: int = 0
) -> LinearProbe:
    torch.manual_seed(seed)
    x, y = train
    mean, std = x.mean(0, keepdim=True), x.std(0, keepdim=True) + 1e-6
    head = nn.Linear(x.shape[1], outputs)
    generator = torch.Generator().manual_seed(seed)
    criterion = loss_fn(multi_label)
    fit(
        Training(
            head,
            head.parameters(),
            lr=PROBE_LR,
            schedule=at_60_and_80_percent(epochs),
            batches=lambda epoch: torch.randperm(len(x), generator=generator).split(BATCH),
            loss=lambda batch: criterion(head((x[batch] - mean) / std), y[batch]),
        ),
        epochs,
    )
    return LinearProbe(head, mean, std)


def label_subset(count: int, fraction: float) -> torch.Tensor:
    """The first `fraction` of a fixed permutation: the same labelled subset for every model compared."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(0))[: max(int(count * fraction), 1)]


def outputs_of(task: str, targets: torch.Tensor) -> int:
    return targets.shape[1] if MULTI_LABEL[task] else int(targets.max()) + 1


def linear(
    backbone: nn.Module,
    task: str,
    splits: dict,
    transform: ReflectanceInput,
    device: torch.device,
    epochs: int,
    label_fraction: float,
) -> dict[str, float]:
    extracted = {name: predict(backbone, task, dataset, transform, device) for name, dataset in splits.items()}
    x, y = extracted["train"]
    keep = label_subset(len(x), label_fraction)
    multi = MULTI_LABEL[task]
    probe = train_linear((x[keep], y[keep]), outputs_of(task, y), epochs, multi)
    return record(
        lambda split: score(probe.logits(extracted[split][0]), extracted[split][1], multi),
        len(keep),
        len(extracted["test"][1]),
    )


def flipped(images: torch.Tensor) -> torch.Tensor:
    """Horizontally, then vertically, each with p 0.5, the whole batch alike."""
    if torch.rand(()) < 0.5:
        images = images.flip(-1)
    if torch.rand(()) < 0.5:
        images = images.flip(-2)
    return images


def finetune(
    backbone: nn.Module,
    task: str,
    splits: dict,
    transform: ReflectanceInput,
    device: torch.device,
    epochs: int,
    label_fraction: float,
    features_dim: int,
    seed: int = 0,
) -> dict[str, float]:
    torch.manual_seed(seed)
    train = splits["train"]
    keep = label_subset(len(train), label_fraction)
    subset = torch.utils.data.Subset(train, keep.tolist())
    outputs = train.num_classes if MULTI_LABEL[task] else len(train.classes)
    model = nn.Sequential(backbone, nn.Linear(features_dim, outputs)).to(device)
    criterion = loss_fn(MULTI_LABEL[task])
    fit(
        Training(
            model,
            model.parameters(),
            lr=FINETUNE_LR,
            schedule=at_60_and_80_percent(epochs),
            batches=lambda epoch: datasets.batches(task, subset, FINETUNE_BATCH, shuffle=True, seed=seed + epoch),
            loss=lambda batch: criterion(
                model(flipped(transform(batch["image"].to(device)))), batch["target"].to(device)
            ),
        ),
        epochs,
    )
    return record(
        lambda split: score(*predict(model, task, splits[split], transform, device), MULTI_LABEL[task]),
        len(keep),
        len(splits["test"]),
    )


def modern(backbone: nn.Module, setting: Setting) -> dict[str, float]:
    evaluation = setting.evaluation
    if evaluation.finetunes:
        return finetune(
            backbone,
            evaluation.task,
            setting.splits,
            setting.transform,
            setting.device,
            evaluation.epochs,
            evaluation.label_fraction,
            setting.features,
        )
    return linear(
        backbone,
        evaluation.task,
        setting.splits,
        setting.transform,
        setting.device,
        evaluation.epochs,
        evaluation.label_fraction,
    )


# --- recipe paper -------------------------------------------------------------------------------

EUROSAT_BATCH = 32  # datasets/eurosat_datamodule.py
REFERENCE_SEED = 42  # pl.seed_everything(42); BigearthnetDataModule(seed=42)
# main_bigearthnet.py: the README's linear-probe command (batch 1024, lr 1e-3); fine-tuning takes the
# script's defaults (batch 256, lr 1e-5). Milestones are epochs, not fractions: [60, 80].
BIGEARTHNET = {"linear": {"batch": 1024, "lr": 1e-3}, "finetune": {"batch": 256, "lr": 1e-5}}
BIGEARTHNET_MILESTONES = [60, 80]
BIGEARTHNET_DROPOUT = 0.2


def reference_subset(count: int, fraction: float, seed: int = REFERENCE_SEED) -> list[int]:
    """utils/data.py random_subset: int(fraction × count) indices drawn *with replacement*."""
    import numpy as np

    return [int(i) for i in np.random.default_rng(seed).choice(range(count), int(fraction * count))]


def full_batches(task: str, dataset, batch_size: int, seed: int):
    """Shuffled training batches with drop_last, unless a single partial batch is all there is."""
    for number, batch in enumerate(datasets.batches(task, dataset, batch_size, shuffle=True, seed=seed)):
        if len(batch["target"]) < batch_size and number > 0:
            return
        yield batch


def eurosat_paper(
    backbone: nn.Module,
    splits: dict,
    transform: ReflectanceInput,
    device: torch.device,
    epochs: int,
    label_fraction: float,
    features_dim: int,
    seed: int = 0,
) -> dict[str, float]:
    """main_eurosat.py: Classifier(backbone, Linear) with the backbone under no_grad but in train mode, as
    Lightning's model.train() leaves it: its BatchNorm normalises by batch statistics and keeps updating
    its running ones during the probe. Adam (lr 1e-3) on the linear layer only, batch 32 with drop_last,
    lr × 0.1 at 60% and 80% of the epochs; then accuracy in eval mode."""
    torch.manual_seed(seed)
    train = splits["train"]
    keep = reference_subset(len(train), label_fraction) if label_fraction < 1 else list(range(len(train)))
    subset = torch.utils.data.Subset(train, keep)
    backbone = backbone.to(device)
    head = nn.Linear(features_dim, len(train.classes)).to(device)

    def loss(batch: dict) -> torch.Tensor:
        with torch.no_grad():
            features = backbone(transform(batch["image"].to(device)))
        return nn.functional.cross_entropy(head(features), batch["target"].to(device))

    fit(
        Training(
            backbone,
            head.parameters(),
            schedule=at_60_and_80_percent(epochs),
            loss=loss,
            batches=lambda epoch: full_batches("eurosat", subset, EUROSAT_BATCH, seed + epoch),
        ),
        epochs,
    )
    classifier = nn.Sequential(backbone, head)
    return record(
        lambda split: score(*predict(classifier, "eurosat", splits[split], transform, device), False),
        len(keep),
        len(splits["test"]),
    )


def micro_ap(logits: torch.Tensor, target: torch.Tensor) -> float:
    from torchmetrics.functional.classification import multilabel_average_precision

    return float(multilabel_average_precision(logits, target.long(), target.shape[1], average="micro"))


def per_batch_map(
    model: nn.Module, dataset, transform: ReflectanceInput, device: torch.device, batch_size: int
) -> dict[str, float]:
    """The paper's mAP (micro-AP of each batch, averaged, as ssl_finetuner's shared_step logs it) beside the
    global micro- and macro-AP over every sample."""
    model.eval().to(device)
    per_batch, outputs, targets = [], [], []
    with torch.no_grad():
        for batch in datasets.batches("bigearthnet", dataset, batch_size):
            logits = model(transform(batch["image"].to(device))).float().cpu()
            per_batch.append(micro_ap(logits, batch["target"]))
            outputs.append(logits)
            targets.append(batch["target"])
    overall = score(torch.cat(outputs), torch.cat(targets), True)
    return {"mAP": sum(per_batch) / len(per_batch), "mAP_global": overall["mAP"], "mAP_macro": overall["mAP_macro"]}


def bigearthnet_paper(
    backbone: nn.Module,
    splits: dict,
    transform: ReflectanceInput,
    device: torch.device,
    epochs: int,
    label_fraction: float,
    features_dim: int,
    finetunes: bool,
    seed: int = 0,
) -> dict[str, float]:
    """main_bigearthnet.py with SSLFineTuner: Dropout(0.2) then a linear layer (SSLEvaluator, n_hidden None),
    MultiLabelSoftMarginLoss, Adam over the head (and the backbone when fine-tuning), lr × 0.1 at epochs
    60 and 80, the backbone in eval mode every epoch (on_train_epoch_start), training batches with
    drop_last, a label fraction drawn with replacement (seed 42)."""
    torch.manual_seed(seed)
    settings = BIGEARTHNET["finetune" if finetunes else "linear"]
    train = splits["train"]
    keep = reference_subset(len(train), label_fraction) if label_fraction < 1 else list(range(len(train)))
    subset = torch.utils.data.Subset(train, keep)
    head = nn.Sequential(nn.Dropout(BIGEARTHNET_DROPOUT), nn.Linear(features_dim, train.num_classes))
    model = nn.Sequential(backbone, head).to(device)
    criterion = nn.MultiLabelSoftMarginLoss()

    def loss(batch: dict) -> torch.Tensor:
        with torch.set_grad_enabled(finetunes):
            features = backbone(transform(batch["image"].to(device)))
        return criterion(head(features), batch["target"].float().to(device))

    def head_trains(model: nn.Module) -> None:
        model.train()
        backbone.eval()

    fit(
        Training(
            model,
            list(head.parameters()) + (list(backbone.parameters()) if finetunes else []),
            lr=settings["lr"],
            schedule=steps_at(BIGEARTHNET_MILESTONES),
            loss=loss,
            batches=lambda epoch: full_batches("bigearthnet", subset, settings["batch"], seed + epoch),
            train_mode=head_trains,
        ),
        epochs,
    )
    return record(
        lambda split: per_batch_map(model, splits[split], transform, device, settings["batch"]),
        len(keep),
        len(splits["test"]),
    )


def paper(backbone: nn.Module, setting: Setting) -> dict[str, float]:
    evaluation = setting.evaluation
    if evaluation.task == "eurosat":
        return eurosat_paper(
            backbone,
            setting.splits,
            setting.transform,
            setting.device,
            evaluation.epochs,
            evaluation.label_fraction,
            setting.features,
        )
    return bigearthnet_paper(
        backbone,
        setting.splits,
        setting.transform,
        setting.device,
        evaluation.epochs,
        evaluation.label_fraction,
        setting.features,
        evaluation.finetunes,
    )
