"""BatchAugment against the reference's torchvision-on-PIL pipeline, and what one batch dispatches.

The statistics come from probe images run through both pipelines as the reference's seco views
(q = t0, k0 = aug(t1), k1 = t2, k2 = aug(t0)) and are compared with two-sample KS statistics.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from kornia import augmentation as K
from PIL import Image, ImageFilter
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision import transforms

from jobs.pretrain.augment import BatchAugment, jitter_and_grey, resample
from jobs.pretrain.views import AUGMENTED, VIEW_SLOTS
from secoctl.model_card import IMAGENET_MEAN, IMAGENET_STD

PATCH, SIZE = 132, 112  # half the seco-1m shape (264 -> 224): the same scale ratios, a quarter of the pixels
SAMPLES, CHUNK = 300, 50
KS_ALPHA = 0.001


class GaussianBlur:
    """pl_bolts.models.self_supervised.moco.transforms.GaussianBlur (Lightning-Universe/lightning-bolts, Apache-2.0)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, x):
        sigma = random.uniform(self.sigma[0], self.sigma[1])
        x = x.filter(ImageFilter.GaussianBlur(radius=sigma))
        return x


# SeasonalContrastMultiAug's transforms (ServiceNow/seasonal-contrast, datasets/seco_dataset.py) at SIZE.
augment = transforms.Compose(
    [
        transforms.RandomApply(
            [
                transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)  # not strengthened
            ],
            p=0.8,
        ),
        transforms.RandomGrayscale(p=0.2),
        transforms.RandomApply([GaussianBlur([0.1, 2.0])], p=0.5),
        transforms.RandomHorizontalFlip(),
    ]
)
preprocess = transforms.Compose(
    [
        transforms.RandomResizedCrop(SIZE, scale=(0.2, 1.0)),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),  # pl_bolts' imagenet_normalization()
    ]
)


def reference_views(t0: Image.Image, t1: Image.Image, t2: Image.Image) -> list[torch.Tensor]:
    """SeasonalContrastMultiAug.__getitem__ after its three timestamps are read."""
    q = t0
    k0 = augment(t1)
    k1 = t2
    k2 = augment(t0)
    return [preprocess(q), preprocess(k0), preprocess(k1), preprocess(k2)]


def probes() -> list[np.ndarray]:
    """(H, W, 3) uint8 probes for t0, t1, t2.

    t0: grey, a left-to-right ramp under fine noise: flips show as the ramp's sign (grey survives
        every colour step but brightness and contrast, which keep its order), blur as lost noise;
    t1: colour tiles, 4 px, four colours, so every crop holds the same mix: brightness, chroma, grey;
    t2: coordinates, R = x and G = y ramps: the crop box.
    """
    rng = np.random.default_rng(7)
    x = np.arange(PATCH)[None, :].repeat(PATCH, 0)
    y = x.T
    ramp = 40 + 100 * x / (PATCH - 1) + rng.uniform(-20, 20, (PATCH, PATCH))
    grey = np.rint(ramp).astype(np.uint8)[:, :, None].repeat(3, 2)
    colours = np.array([[200, 60, 60], [60, 180, 80], [70, 90, 200], [220, 200, 60]], np.uint8)
    tiles = colours[((y // 4) % 2) * 2 + (x // 4) % 2]
    coordinates = np.stack(
        [np.rint(255 * x / (PATCH - 1)), np.rint(255 * y / (PATCH - 1)), np.full((PATCH, PATCH), 128)], 2
    ).astype(np.uint8)
    return [grey, tiles, coordinates]


def unnormalise(view: torch.Tensor) -> np.ndarray:
    """Back to [0, 1], rounded to 8 bits as the reference's views are: in a blurred view the rounding
    noise, not the blur, would otherwise set the Laplacian's energy."""
    pixels = view * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    return (pixels * 255).round().numpy() / 255


def statistics(views: list[np.ndarray]) -> dict[str, float]:
    """One sample's measurements; views are (3, SIZE, SIZE) in [0, 1], in the seco order q, k0, k1, k2."""
    q, k0, k1, k2 = views
    luma = np.tensordot(np.array([0.299, 0.587, 0.114]), k0, 1)
    columns = np.arange(2, SIZE - 2)  # the border pixels see the crop's edge
    slope_x = np.polyfit(columns, k1[0, 2:-2, 2:-2].mean(0), 1)[0]
    slope_y = np.polyfit(columns, k1[1, 2:-2, 2:-2].mean(1), 1)[0]
    width, height = (slope * SIZE * (PATCH - 1) for slope in (slope_x, slope_y))  # R, G = x, y / (PATCH - 1)

    def sharpness(view: np.ndarray) -> float:
        """Laplacian energy over gradient energy of the grey level: lower when blurred, whatever the contrast."""
        g = view.mean(0)
        laplacian = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
        gradient = np.diff(g, axis=0)[:, :-1] ** 2 + np.diff(g, axis=1)[:-1] ** 2
        return float((laplacian**2).mean() / gradient.mean())

    def mirrored(view: np.ndarray) -> float:
        g = view.mean(0)
        return float(g[:, SIZE // 2 :].mean() < g[:, : SIZE // 2].mean())

    return {
        "area": width * height / PATCH**2,
        "aspect": width / height,
        "brightness": float(luma.mean()),
        "chroma": float((k0.max(0) - k0.min(0)).mean()),
        "grey": float(np.abs(k0 - k0.mean(0)).max() < 0.5 / 255),
        "flipped": mirrored(k2),
        "query flipped": mirrored(q),
        "crop sharpness": sharpness(q),
        "augmented sharpness": sharpness(k2),
    }


def tabulate(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, np.ndarray]]:
    images = probes()
    random.seed(0)
    torch.manual_seed(0)
    pil = [Image.fromarray(image) for image in images]
    reference = [statistics([unnormalise(v) for v in reference_views(*pil)]) for _ in range(SAMPLES)]
    ours = BatchAugment(SIZE, AUGMENTED["seco"], True, VIEW_SLOTS["seco"])
    slots = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)[None].expand(CHUNK, -1, -1, -1, -1)
    batched = []
    for _ in range(SAMPLES // CHUNK):
        views = [unnormalise(view) for view in ours(slots.contiguous())]
        batched += [statistics([view[n] for view in views]) for n in range(CHUNK)]
    return {"reference": tabulate(reference), "ours": tabulate(batched)}


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    values = np.concatenate([a, b])
    cdf_a = np.searchsorted(np.sort(a), values, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), values, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def ks_critical(n: int, m: int) -> float:
    return math.sqrt(-math.log(KS_ALPHA / 2) / 2) * math.sqrt((n + m) / (n * m))


@pytest.mark.parametrize(
    "statistic",
    [
        "area",
        "aspect",
        "flipped",
        "query flipped",
        "grey",
        "brightness",
        "chroma",
        "crop sharpness",
        "augmented sharpness",
    ],
)
def test_output_statistics_match_the_reference_pipeline(measured, statistic):
    ours, reference = measured["ours"][statistic], measured["reference"][statistic]
    distance = ks_statistic(ours, reference)
    print(f"{statistic}: ours mean {ours.mean():.4f}, reference {reference.mean():.4f}, KS {distance:.3f}")
    assert distance < ks_critical(len(ours), len(reference))


def test_the_probes_see_what_they_should(measured):
    ours = measured["ours"]
    assert ours["query flipped"].sum() == 0 and 0.35 < ours["flipped"].mean() < 0.65
    assert 0.1 < ours["grey"].mean() < 0.3
    assert ours["area"].min() >= 0.2 * 0.97 and ours["area"].max() <= 1.03
    assert 3 / 4 * 0.97 <= ours["aspect"].min() and ours["aspect"].max() <= 4 / 3 * 1.03


def test_the_resize_is_pils_bilinear_on_the_crop():
    """Up- and downscaling boxes, the image edge included: PIL's result within its own rounding."""
    image = np.random.default_rng(0).integers(0, 256, (PATCH, PATCH, 3), dtype=np.uint8)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    for box in [(10, 20, 70, 90), (0, 0, PATCH, PATCH), (5, 0, PATCH, 120), (0, 0, 58, 58)]:
        ours = resample(tensor, torch.zeros(1, dtype=torch.long), torch.tensor([box], dtype=torch.float32), SIZE)
        expected = np.asarray(Image.fromarray(image).crop(box).resize((SIZE, SIZE), Image.BILINEAR), np.float32)
        assert np.abs(ours[0].permute(1, 2, 0).numpy() - expected).max() <= 1.0


def test_colour_steps_compose_to_torchvisions_sequence_where_nothing_clips():
    """Same draws, every order: our two matrices around the hue step against ColorJitter's four steps."""
    torch.manual_seed(0)
    images = 0.3 + 0.3 * torch.rand(24, 3, 16, 16)  # mid-range values: no step clips
    draws = torch.rand(24, 10)
    draws[:, 8] = 0.0  # jitter every image
    draws[:, 9] = torch.arange(24) % 2 * 0.5  # grey every other one
    ours = jitter_and_grey(images, draws)
    factors = torch.tensor([1.0, 1.0, 1.0, 0.0]) + torch.tensor([0.4, 0.4, 0.4, 0.1]) * (2 * draws[:, 4:8] - 1)
    steps = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for n in range(len(images)):
        image = images[n]
        for step in draws[n, :4].argsort().tolist():
            image = steps[step](image, factors[n, step].item())
        if draws[n, 9] < 0.2:
            image = TF.rgb_to_grayscale(image, 3)
        # torchvision's tensor grey weights are 0.2989/0.587/0.114, ours PIL's 0.299/0.587/0.114
        torch.testing.assert_close(ours[n], image, atol=2e-4, rtol=0)


class KorniaAugment(torch.nn.Module):
    """The kornia pipeline BatchAugment replaced (jobs/pretrain/augment.py before issue 26), for the op count."""

    def __init__(self, size: int, augmented: tuple[bool, ...], augment_first: bool):
        super().__init__()
        self.augmented, self.augment_first = augmented, augment_first
        self.crop = K.RandomResizedCrop((size, size), scale=(0.2, 1.0))
        kernel = max(int(0.1 * size), 3) | 1
        self.artificial = K.AugmentationSequential(
            K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
            K.RandomGrayscale(p=0.2),
            K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=0.5),
            K.RandomHorizontalFlip(),
        )
        self.normalize = K.Normalize(torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD))

    @torch.no_grad()
    def forward(self, views: torch.Tensor) -> list[torch.Tensor]:
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


class OpCount(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def dispatched(module: torch.nn.Module, inputs: torch.Tensor) -> Counter:
    torch.manual_seed(0)
    with OpCount() as count:
        module(inputs)
    return count.ops


def test_one_batch_dispatches_the_same_ops_at_any_batch_size_and_fewer_than_kornia():
    ours = BatchAugment(32, AUGMENTED["seco"], True, VIEW_SLOTS["seco"])
    kornia = KorniaAugment(32, AUGMENTED["seco"], True)
    counts = {}
    for batch in (4, 32):
        slots = torch.randint(0, 256, (batch, 3, 3, 48, 48), dtype=torch.uint8)
        counts[batch] = (dispatched(ours, slots), dispatched(kornia, slots[:, list(VIEW_SLOTS["seco"])]))
        print(f"batch {batch}: ours {sum(counts[batch][0].values())} aten ops, kornia {sum(counts[batch][1].values())}")
    assert counts[4][0] == counts[32][0]
    for batch, (ours_ops, kornia_ops) in counts.items():
        assert sum(ours_ops.values()) < sum(kornia_ops.values())
    # nothing waits for the device: no values read back to the host, no data-dependent sizes, no
    # tensors built on the host during a batch (each one a copy to the device)
    assert not {"aten._local_scalar_dense", "aten.nonzero", "aten.lift_fresh"} & set(counts[32][0])
