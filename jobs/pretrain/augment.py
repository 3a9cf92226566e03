"""The paper's augmentations, applied to whole batches on the training device (kornia).

Every view gets RandomResizedCrop(scale 0.2-1) and ImageNet normalisation; the views that the
method marks as augmented also get MoCo-v2's colour jitter (p 0.8), grayscale (p 0.2), Gaussian
blur σ ∈ [0.1, 2] (p 0.5) and a horizontal flip. Each sample draws its own parameters.
`augment_first`: jitter, grey, blur and flip the whole image and crop afterwards, as the reference's
SeasonalContrastMultiAug does (augment, then preprocess); otherwise crop first, as MoCo-v2 does.
"""

from __future__ import annotations

import torch
from kornia import augmentation as K
from torch import nn

from secoctl.model_card import IMAGENET_MEAN, IMAGENET_STD


def _blur_kernel(size: int) -> int:
    kernel = max(int(0.1 * size), 3)  # MoCo-v2: 23 px at 224
    return kernel if kernel % 2 else kernel + 1


class BatchAugment(nn.Module):
    def __init__(self, size: int, augmented: tuple[bool, ...], augment_first: bool, view_slots: tuple[int, ...]):
        super().__init__()
        self.view_slots = view_slots
        self.augmented = augmented
        self.augment_first = augment_first
        self.crop = K.RandomResizedCrop((size, size), scale=(0.2, 1.0))
        self.artificial = K.AugmentationSequential(
            K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
            K.RandomGrayscale(p=0.2),
            K.RandomGaussianBlur((_blur_kernel(size), _blur_kernel(size)), (0.1, 2.0), p=0.5),
            K.RandomHorizontalFlip(),
        )
        self.normalize = K.Normalize(torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD))

    @torch.no_grad()
    def forward(self, slots: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (batch, slots, 3, H, W) -> one normalised float batch per view, channels_last."""
        views = slots[:, list(self.view_slots)]
        out = []
        for index, augmented in enumerate(self.augmented):
            image = views[:, index].float().div_(255)
            if augmented and self.augment_first:
                image = self.crop(self.artificial(image))
            else:
                image = self.crop(image)
                if augmented:
                    image = self.artificial(image)
            out.append(self.normalize(image).contiguous(memory_format=torch.channels_last))
        return out
