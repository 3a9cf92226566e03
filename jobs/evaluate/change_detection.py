"""OSCD change detection (reference main_oscd): the backbone as the encoder of a U-Net over both dates.

`paper(backbone, setting)` and `modern(backbone, setting)` are the recipes' entries (jobs.evaluate.stage.RECIPES).

recipe paper (`evaluate_paper`): main_oscd.py point by point. The encoder is left out of the
optimizer (its BatchNorm still runs in train mode, as Lightning's model.train() leaves it); the head
is the reference's own (reference_unet.py); inputs are OSCD's own quantile stretch to 8 bits, no
ImageNet statistics; training and test tiles are the reference's 96 px grid (zero past the edge, as
PIL's crop pads), training tiles flipped and rotated by multiples of 90 degrees, batch 32; precision,
recall and F1 are averaged over test batches as the paper reports them, and also given pixel-global.

recipe modern (`evaluate`): both dates pass through the same encoder; at each of its five scales the two feature
maps are concatenated and a U-Net decoder (segmentation_models_pytorch's) turns them into a change logit per
pixel. Trained on random 96×96 crops of the training cities with flips, Adam lr 1e-3, weight
decay 1e-4, lr × 0.95 per epoch; tested on whole test cities, tiled. Metrics: precision, recall and
F1 of the change class over every test pixel.
"""

from __future__ import annotations

import torch
from torch import nn

from jobs.common.backbone import ReflectanceInput
from jobs.evaluate.reference_unet import ReferenceUNet
from jobs.evaluate.training import Setting, Training, decay_by, fit

PATCH = 96
BATCH = 32
DECODER_CHANNELS = (256, 128, 64, 32, 16)


class SiameseUNet(nn.Module):
    def __init__(self, backbone: nn.Module, name: str):
        super().__init__()
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
        from segmentation_models_pytorch.encoders import get_encoder

        self.encoder = get_encoder(name, in_channels=backbone.conv1.in_channels, depth=5, weights=None)
        self.encoder.load_state_dict(backbone.state_dict())  # torchvision names, fc and avgpool dropped
        channels = [2 * c for c in self.encoder.out_channels]
        self.decoder = UnetDecoder(encoder_channels=channels, decoder_channels=DECODER_CHANNELS, n_blocks=5)
        self.head = nn.Conv2d(DECODER_CHANNELS[-1], 1, kernel_size=3, padding=1)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        fused = [torch.cat(pair, 1) for pair in zip(self.encoder(before), self.encoder(after))]
        return self.head(self.decoder(fused))[:, 0]


def crops(scenes: list[tuple[torch.Tensor, torch.Tensor]], count: int, generator: torch.Generator):
    """`count` random PATCH×PATCH crops (both dates and the mask), with random flips."""
    images, masks = [], []
    for _ in range(count):
        image, mask = scenes[int(torch.randint(len(scenes), (1,), generator=generator))]
        top = int(torch.randint(image.shape[-2] - PATCH + 1, (1,), generator=generator))
        left = int(torch.randint(image.shape[-1] - PATCH + 1, (1,), generator=generator))
        image, mask = image[..., top : top + PATCH, left : left + PATCH], mask[top : top + PATCH, left : left + PATCH]
        for dim in (-1, -2):
            if torch.rand((), generator=generator) < 0.5:
                image, mask = image.flip(dim), mask.flip(dim)
        images.append(image)
        masks.append(mask)
    return torch.stack(images), torch.stack(masks)


def epoch_size(scenes: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Crops per epoch: as many as it takes to tile every training city once."""
    return max(sum((m.shape[0] // PATCH) * (m.shape[1] // PATCH) for _, m in scenes), BATCH)


@torch.no_grad()
def predict(model: SiameseUNet, image: torch.Tensor, transform: ReflectanceInput, device: torch.device) -> torch.Tensor:
    """Change probability of a whole city, padded to a multiple of 32 by reflection."""
    model.eval()
    height, width = image.shape[-2:]
    pad = (0, (-width) % 32, 0, (-height) % 32)
    dates = [nn.functional.pad(transform(image[t].to(device))[None], pad, mode="reflect") for t in (0, 1)]
    return torch.sigmoid(model(*dates))[0, :height, :width].cpu()


def scores(predicted: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    true_positive = int((predicted & truth).sum())
    precision = true_positive / max(int(predicted.sum()), 1)
    recall = true_positive / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def training(model: nn.Module, parameters, batches, transform: ReflectanceInput, device: torch.device) -> Training:
    """Both recipes' training: Adam 1e-3, weight decay 1e-4, lr x 0.95 per epoch (main_oscd.py), binary
    cross-entropy on the change mask; `batches(epoch)` yields one epoch's (image pairs, masks)."""

    def loss(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, masks = batch
        images = images.to(device)
        logits = model(transform(images[:, 0]), transform(images[:, 1]))
        return nn.functional.binary_cross_entropy_with_logits(logits, masks.float().to(device))

    return Training(model, parameters, batches=batches, loss=loss, schedule=decay_by(0.95), lr=1e-3, weight_decay=1e-4)


def evaluate(
    backbone: nn.Module,
    name: str,
    train: list,
    test: list,
    transform: ReflectanceInput,
    device: torch.device,
    epochs: int,
    seed: int = 0,
) -> dict[str, float]:
    torch.manual_seed(seed)
    model = SiameseUNet(backbone, name).to(device)
    generator = torch.Generator().manual_seed(seed)
    per_epoch = epoch_size(train)
    fit(
        training(
            model,
            model.parameters(),
            lambda epoch: (
                crops(train, min(BATCH, per_epoch - start), generator) for start in range(0, per_epoch, BATCH)
            ),
            transform,
            device,
        ),
        epochs,
    )
    predicted = torch.cat([(predict(model, image, transform, device) > 0.5).flatten() for image, _ in test])
    truth = torch.cat([mask.bool().flatten() for _, mask in test])
    return {
        **scores(predicted, truth),
        "train_cities": len(train),
        "test_cities": len(test),
        "test_pixels": int(truth.numel()),
    }


def modern(backbone: nn.Module, setting: Setting) -> dict[str, float]:
    return evaluate(
        backbone,
        setting.architecture,
        setting.splits["train"],
        setting.splits["test"],
        setting.transform,
        setting.device,
        setting.evaluation.epochs,
    )


def grid_tiles(scenes: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's grid: PATCH-sized tiles from (0, 0) in steps of PATCH, zero past a city's edge."""
    images, masks = [], []
    for image, mask in scenes:
        height, width = mask.shape
        pad = (0, (-width) % PATCH, 0, (-height) % PATCH)
        image, mask = nn.functional.pad(image, pad), nn.functional.pad(mask, pad)
        rows, cols = mask.shape[0] // PATCH, mask.shape[1] // PATCH
        for row in range(rows):
            for col in range(cols):
                window = (slice(row * PATCH, (row + 1) * PATCH), slice(col * PATCH, (col + 1) * PATCH))
                images.append(image[(..., *window)])
                masks.append(mask[window])
    return torch.stack(images), torch.stack(masks)


def flips_and_rotations(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
    """Per tile: horizontal flip with p 0.5, then a rotation by 0, 90, 180 or 270 degrees (oscd_datamodule)."""
    images, masks = images.clone(), masks.clone()
    for index in range(len(images)):
        if torch.rand((), generator=generator) < 0.5:
            images[index], masks[index] = images[index].flip(-1), masks[index].flip(-1)
        quarter_turns = int(torch.randint(4, (1,), generator=generator))
        images[index] = torch.rot90(images[index], quarter_turns, (-2, -1))
        masks[index] = torch.rot90(masks[index], quarter_turns, (-2, -1))
    return images, masks


def batches_of(count: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of BATCH; the last partial one is dropped (drop_last) unless it is the only one."""
    batches = list(torch.randperm(count, generator=generator).split(BATCH))
    return batches[:-1] if len(batches) > 1 and len(batches[-1]) < BATCH else batches


def per_batch_and_global(predictions: list[torch.Tensor], truths: list[torch.Tensor]) -> dict[str, float]:
    """The paper's precision/recall/F1 (each the mean of per-batch values) and the pixel-global ones."""
    per_batch = [scores(p, t) for p, t in zip(predictions, truths)]
    result = {metric: sum(s[metric] for s in per_batch) / len(per_batch) for metric in ("precision", "recall", "f1")}
    overall = scores(torch.cat([p.flatten() for p in predictions]), torch.cat([t.flatten() for t in truths]))
    return {**result, **{f"{metric}_global": value for metric, value in overall.items()}}


def evaluate_paper(
    backbone: nn.Module,
    name: str,
    train: list,
    test: list,
    transform: ReflectanceInput,
    device: torch.device,
    epochs: int,
    seed: int = 0,
) -> dict[str, float]:
    torch.manual_seed(seed)
    model = ReferenceUNet(backbone, name).to(device)
    for parameter in model.encoder.parameters():
        parameter.requires_grad_(False)  # not in the optimizer either way; no gradient computed for it
    generator = torch.Generator().manual_seed(seed)
    train_images, train_masks = grid_tiles(train)
    fit(
        training(
            model,
            model.head_parameters(),
            lambda epoch: (
                flips_and_rotations(train_images[batch], train_masks[batch], generator)
                for batch in batches_of(len(train_images), generator)
            ),
            transform,
            device,
        ),
        epochs,
    )
    test_images, test_masks = grid_tiles(test)
    model.eval()
    predictions, truths = [], []
    with torch.no_grad():
        for batch in torch.randperm(len(test_images), generator=generator).split(BATCH):
            images = test_images[batch].to(device)
            predictions.append((torch.sigmoid(model(transform(images[:, 0]), transform(images[:, 1]))) > 0.5).cpu())
            truths.append(test_masks[batch].bool())
    return {
        **per_batch_and_global(predictions, truths),
        "train_cities": len(train),
        "test_cities": len(test),
        "train_tiles": len(train_images),
        "test_tiles": len(test_images),
        "test_pixels": sum(int(mask.numel()) for _, mask in test),
    }


def paper(backbone: nn.Module, setting: Setting) -> dict[str, float]:
    return evaluate_paper(
        backbone,
        setting.architecture,
        setting.splits["train"],
        setting.splits["test"],
        setting.transform,
        setting.device,
        setting.evaluation.epochs,
    )
