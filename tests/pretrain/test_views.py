import numpy as np
import torch

from jobs.pretrain.augment import BatchAugment
from jobs.pretrain.views import STRETCH, plan_views, rgb_uint8, select_views


def test_seco_views_follow_the_paper():
    rng = np.random.default_rng(0)
    for _ in range(50):
        plan = plan_views("seco", 5, rng)
        t0, t1, t2, t0_again = plan.timestamps
        assert t0 == t0_again and all(0 <= t < 5 for t in plan.timestamps)
        assert plan.augmented == (False, True, False, True)  # q = t0, k0 = aug(t1), k1 = t2, k2 = aug(t0)
    seen = {plan_views("seco", 5, rng).timestamps[1] for _ in range(200)}
    assert seen == {0, 1, 2, 3, 4}
    moco = plan_views("moco", 5, rng)
    assert moco.timestamps[0] == moco.timestamps[1] and moco.augmented == (True, True)


def test_reflectance_is_stretched_like_the_reference_uint8_quantiles():
    bands = ["B02", "B03", "B04", "B08"]
    pixels = np.zeros((1, 4, 1, 3), np.uint16)
    for column, band in enumerate(["B02", "B03", "B04"]):
        low, high = STRETCH[band]
        pixels[0, bands.index(band), 0] = [int(low), int((low + high) / 2), int(high) + 1]
    rgb = rgb_uint8(pixels, bands)  # output order B04, B03, B02
    assert rgb.shape == (1, 3, 1, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(rgb[0, :, 0, 0], 0, atol=1)
    np.testing.assert_allclose(rgb[0, :, 0, 1], 127, atol=1)
    np.testing.assert_array_equal(rgb[0, :, 0, 2], 255)
    views = select_views(rgb.repeat(5, axis=0), plan_views("seco", 5, np.random.default_rng(0)))
    assert views.shape == (4, 3, 1, 3)


def test_batch_augmentation_crops_every_view_and_alters_only_the_marked_ones():
    torch.manual_seed(0)
    augment = BatchAugment(32, (False, True))
    batch = torch.randint(0, 256, (8, 2, 3, 48, 48), dtype=torch.uint8)
    batch[:, 1] = batch[:, 0]
    plain, augmented = augment(batch)
    assert plain.shape == augmented.shape == (8, 3, 32, 32)
    assert plain.is_contiguous(memory_format=torch.channels_last)
    # Unaugmented views are crops of the normalised input: values stay inside its range.
    low = (0 - 0.485) / 0.229
    assert plain.min() >= low - 1e-4
    assert not torch.allclose(plain, augmented)
