"""OSCD change detection (reference main_oscd): the backbone as the encoder of a U-Net over both dates.

Both dates pass through the same encoder; at each of its five scales the two feature maps are
concatenated and a U-Net decoder (segmentation_models_pytorch's) turns them into a change logit per
pixel. Trained on random 96×96 crops of the training cities with flips, Adam lr 1e-3, weight
decay 1e-4, lr × 0.95 per epoch; tested on whole test cities, tiled. Metrics: precision, recall and
F1 of the change class over every test pixel.
"""

from __future__ import annotations

import torch
from torch import nn

from jobs.common.backbone import ReflectanceInput

PATCH = 96
BATCH = 32
DECODER_CHANNELS = (256, 128, 64, 32, 16)


class SiameseUNet(nn.Module):
    def __init__(self, backbone: nn.Module, name: str):
        super().__init__()
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
        from segmentation_models_pytorch.encoders import get_encoder

        self.encoder = get_encoder(name, in_channels=3, depth=5, weights=None)
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
        image, mask = image[..., top:top + PATCH, left:left + PATCH], mask[top:top + PATCH, left:left + PATCH]
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


def evaluate(backbone: nn.Module, name: str, train: list, test: list, transform: ReflectanceInput,
             device: torch.device, epochs: int, seed: int = 0) -> dict[str, float]:
    torch.manual_seed(seed)
    model = SiameseUNet(backbone, name).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.95)
    generator = torch.Generator().manual_seed(seed)
    per_epoch = epoch_size(train)
    for _ in range(epochs):
        model.train()
        for start in range(0, per_epoch, BATCH):
            images, masks = crops(train, min(BATCH, per_epoch - start), generator)
            images = images.to(device)
            logits = model(transform(images[:, 0]), transform(images[:, 1]))
            loss = nn.functional.binary_cross_entropy_with_logits(logits, masks.float().to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    predicted = torch.cat([(predict(model, image, transform, device) > 0.5).flatten() for image, _ in test])
    truth = torch.cat([mask.bool().flatten() for _, mask in test])
    return {**scores(predicted, truth), "train_cities": len(train), "test_cities": len(test),
            "test_pixels": int(truth.numel())}
