"""The multispectral augmentation against SSL4EO-S12's MoCo transforms, written out here in numpy.

zhu-xlab/SSL4EO-S12 src/benchmark/pretrain_ssl/pretrain_moco_v2_s2c.py composes, on uint8 (H, W, C):
RandomApply([RandomBrightness(0.4), RandomContrast(0.4)], p=0.8), RandomApply([ToGray(C)], p=0.2),
RandomApply([GaussianBlur([.1, 2.])], p=0.5) (models/rs_transforms_uint8.py, moco_v2/loader.py: cv2's
GaussianBlur with ksize (0, 0)). The probe stays where none of its uint8 casts wraps, so the one stated
deviation (we clamp, it wraps) cannot show; the statistics are compared as tests/pretrain/test_augment.py
compares the RGB ones, by two-sample Kolmogorov-Smirnov tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jobs.pretrain.augment import BatchAugment, SpectralArtificial
from jobs.pretrain.views import AUGMENTED, VIEW_SLOTS
from secoctl.spec import SENTINEL2_BANDS
from tests.pretrain.test_augment import ks_critical, ks_statistic

BANDS, PATCH, SAMPLES = 12, 48, 400


def probe() -> np.ndarray:
    """(H, W, 12) uint8: each band its own level (50-138) over a shared ramp and fine noise, at most 178, so that
    brightness × 1.4 and contrast × 1.4 about the band's mean stay inside 0-255."""
    rng = np.random.default_rng(3)
    ramp = 20 * np.arange(PATCH)[None, :].repeat(PATCH, 0) / (PATCH - 1)
    levels = 50 + 8 * np.arange(BANDS)
    return np.rint(levels + ramp[:, :, None] + rng.uniform(0, 20, (PATCH, PATCH, BANDS))).astype(np.uint8)


def cv2_gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """cv2.GaussianBlur(uint8 image, (0, 0), sigma): ksize = round(6σ + 1) | 1, BORDER_REFLECT_101, rounded."""
    radius = (int(round(sigma * 6 + 1)) | 1) // 2
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(k * padded[i : i + PATCH] for i, k in enumerate(kernel))
    both = sum(k * rows[:, i : i + PATCH] for i, k in enumerate(kernel))
    return np.clip(np.rint(both), 0, 255).astype(np.uint8)


def ssl4eo_transform(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SSL4EO-S12's colour, grey and blur steps, as its code does them (astype(np.uint8) after each)."""
    if rng.random() < 0.8:
        image = (image * rng.uniform(0.6, 1.4)).astype(np.uint8)  # RandomBrightness(0.4)
        mean = np.mean(image, axis=(0, 1))
        image = ((image - mean) * rng.uniform(0.6, 1.4) + mean).astype(np.uint8)  # RandomContrast(0.4)
    if rng.random() < 0.2:
        image = np.tile(np.mean(image, axis=-1), (BANDS, 1, 1)).transpose(1, 2, 0).astype(np.uint8)  # ToGray
    if rng.random() < 0.5:
        image = cv2_gaussian_blur(image, rng.uniform(0.1, 2.0))
    return image


def statistics(image: np.ndarray, original: np.ndarray) -> dict[str, float]:
    """One augmented (H, W, C) image in 0-255 against its input: brightness, contrast, grey, band spread, sharpness."""
    inner = (slice(8, -8), slice(8, -8))  # away from the borders, where the blurs extend the image differently
    first = image[..., 0].astype(np.float64)
    g = image.mean(2)[inner]
    laplacian = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return {
        "brightness": float(image.mean() / original.mean()),
        "contrast": float(first[inner].std() / original[..., 0][inner].std()),
        "grey": float(np.ptp(image.astype(np.int16), axis=2).max() <= 1),
        "band spread": float(np.ptp(image.mean((0, 1)))),
        "sharpness": float((laplacian**2).mean()),
    }


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, np.ndarray]]:
    image = probe()
    rng = np.random.default_rng(0)
    reference = [statistics(ssl4eo_transform(image, rng), image) for _ in range(SAMPLES)]
    torch.manual_seed(0)
    batch = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None].expand(SAMPLES, -1, -1, -1)
    ours = (SpectralArtificial()(batch.contiguous()) * 255).round().permute(0, 2, 3, 1).numpy()
    return {
        "reference": {key: np.array([row[key] for row in reference]) for key in reference[0]},
        "ours": {key: np.array([statistics(view, image)[key] for view in ours]) for key in reference[0]},
    }


@pytest.mark.parametrize("statistic", ["brightness", "contrast", "grey", "band spread", "sharpness"])
def test_output_statistics_match_ssl4eo_s12s_transforms(measured, statistic):
    ours, reference = measured["ours"][statistic], measured["reference"][statistic]
    distance = ks_statistic(ours, reference)
    print(f"{statistic}: ours mean {ours.mean():.4f}, SSL4EO-S12 {reference.mean():.4f}, KS {distance:.3f}")
    assert distance < ks_critical(len(ours), len(reference))


def test_the_probe_sees_what_it_should(measured):
    ours = measured["ours"]
    assert 0.1 < ours["grey"].mean() < 0.3
    assert 0.6 * 0.97 < ours["brightness"].min() and ours["brightness"].max() < 1.4 * 1.03
    assert (ours["band spread"][ours["grey"] == 1] < 1).all() and ours["band spread"].max() > 60


def test_twelve_bands_come_out_cropped_unnormalised_and_only_marked_views_altered():
    torch.manual_seed(0)
    augment = BatchAugment(32, AUGMENTED["seco"], True, VIEW_SLOTS["seco"], list(SENTINEL2_BANDS))
    slots = torch.randint(0, 256, (4, 3, BANDS, 48, 48), dtype=torch.uint8)
    views = augment(slots)
    assert [tuple(view.shape) for view in views] == [(4, BANDS, 32, 32)] * 4
    assert all(view.is_contiguous(memory_format=torch.channels_last) for view in views)
    # SSL4EO-S12 feeds ToTensor's [0, 1] as it is: no normalisation after the stretch.
    assert all(0 <= view.min() and view.max() <= 1 for view in views)
    uniform = torch.full((2, 3, BANDS, 48, 48), 100, dtype=torch.uint8)
    query, *_ = augment(uniform)
    torch.testing.assert_close(query, torch.full_like(query, 100 / 255))  # the query is only cropped
