import numpy as np
import torch

from jobs.pretrain.augment import BatchAugment
from jobs.pretrain.views import AUGMENTED, STRETCH, VIEW_SLOTS, augments_before_crop, draw_slots, input_uint8


def test_seco_views_follow_the_paper():
    rng = np.random.default_rng(0)
    for _ in range(50):
        drawn = draw_slots("seco", 5, rng)
        t0, t1, t2, t0_again = (drawn[slot] for slot in VIEW_SLOTS["seco"])
        assert t0 == t0_again and all(0 <= t < 5 for t in drawn)
    assert AUGMENTED["seco"] == (False, True, False, True)  # q = t0, k0 = aug(t1), k1 = t2, k2 = aug(t0)
    seen = {draw_slots("seco", 5, rng)[1] for _ in range(200)}
    assert seen == {0, 1, 2, 3, 4}
    assert len(draw_slots("moco", 5, rng)) == 1 and VIEW_SLOTS["moco"] == (0, 0) and AUGMENTED["moco"] == (True, True)


def test_reflectance_is_stretched_like_the_reference_uint8_quantiles():
    bands = ["B02", "B03", "B04", "B08"]
    pixels = np.zeros((1, 4, 1, 3), np.uint16)
    for column, band in enumerate(["B02", "B03", "B04"]):
        low, high = STRETCH[band]
        pixels[0, bands.index(band), 0] = [int(low), int((low + high) / 2), int(high) + 1]
    rgb = input_uint8(pixels, bands)  # output order B04, B03, B02
    assert rgb.shape == (1, 3, 1, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(rgb[0, :, 0, 0], 0, atol=1)
    np.testing.assert_allclose(rgb[0, :, 0, 1], 127, atol=1)
    np.testing.assert_array_equal(rgb[0, :, 0, 2], 255)


def test_every_slot_a_view_names_is_drawn():
    rng = np.random.default_rng(0)
    for method, slots in VIEW_SLOTS.items():
        assert len(slots) == len(AUGMENTED[method])
        assert sorted(set(slots)) == list(range(len(draw_slots(method, 5, rng))))


def test_batch_augmentation_crops_every_view_and_alters_only_the_marked_ones():
    torch.manual_seed(0)
    augment = BatchAugment(32, (False, True), False, (0, 0))
    batch = torch.randint(0, 256, (8, 1, 3, 48, 48), dtype=torch.uint8)  # both views from the one slot
    plain, augmented = augment(batch)
    assert plain.shape == augmented.shape == (8, 3, 32, 32)
    assert plain.is_contiguous(memory_format=torch.channels_last)
    # Unaugmented views are crops of the normalised input: values stay inside its range.
    low = (0 - 0.485) / 0.229
    assert plain.min() >= low - 1e-4
    assert not torch.allclose(plain, augmented)


class Recorded(torch.nn.Module):
    """Stands in for one augmentation step: records its name and the images it saw, then does `apply`."""

    def __init__(self, name: str, log: list, apply):
        super().__init__()
        self.name, self.log, self.apply = name, log, apply

    def forward(self, images: torch.Tensor, *rest) -> torch.Tensor:
        self.log.append((self.name, tuple(images.shape[:1]) + tuple(images.shape[-2:])))
        return self.apply(images, *rest)


def steps(augment: BatchAugment) -> list:
    log: list = []
    augment.crop = Recorded("crop", log, lambda images, rows: images[rows][..., :32, :32])
    augment.artificial = Recorded("artificial", log, lambda images: images)
    augment(torch.zeros((2, max(augment.view_slots) + 1, 3, 48, 48), dtype=torch.uint8))
    return log


def test_the_reference_order_augments_the_whole_image_before_the_crop():
    assert augments_before_crop("seco", "reference")
    reference = BatchAugment(32, AUGMENTED["seco"], augments_before_crop("seco", "reference"), VIEW_SLOTS["seco"])
    # k0 = aug(t1) and k2 = aug(t0) are augmented whole (48 px), 2 per sample; then every view's crop
    # is cut in one call from the 3 slots and the 2 augmented images of each of the 2 samples.
    assert steps(reference) == [("artificial", (4, 48, 48)), ("crop", (10, 48, 48))]


def test_the_moco_order_and_the_reference_moco_baselines_crop_first():
    assert not augments_before_crop("seco", "moco")
    assert not augments_before_crop("moco", "reference") and not augments_before_crop("moco-tp", "reference")
    moco = BatchAugment(32, AUGMENTED["moco"], augments_before_crop("moco", "reference"), VIEW_SLOTS["moco"])
    assert steps(moco) == [("crop", (2, 48, 48)), ("artificial", (4, 32, 32))]


def test_both_orders_give_normalised_crops_of_the_input_size():
    batch = torch.randint(0, 256, (4, 3, 3, 48, 48), dtype=torch.uint8)
    for first in (True, False):
        torch.manual_seed(0)
        views = BatchAugment(32, AUGMENTED["seco"], first, VIEW_SLOTS["seco"])(batch)
        assert [v.shape for v in views] == [(4, 3, 32, 32)] * 4
