"""Which timestamps become the query and keys, and the input bands' scaling to uint8.

Views are chosen per sample on the CPU (cheap indexing); the augmentations themselves run on the
GPU in batches (jobs/pretrain/augment.py).
"""

from __future__ import annotations

import numpy as np

from secoctl.model_card import RGB_BANDS as RGB
from secoctl.model_card import SSL4EO_S2_L2A_MEAN, stretch

# Each band's fixed stretch, in reflectance × 10000 (the reference's for RGB, SSL4EO-S12's mean ± 2σ for the
# rest: secoctl.model_card.stretch); published weights carry the same.
STRETCH = {band: stretch(band) for band in SSL4EO_S2_L2A_MEAN}


# Which views get the artificial augmentation, per method; the first view is the query.
AUGMENTED = {"seco": (False, True, False, True), "moco": (True, True), "moco-tp": (True, True)}
# Which drawn timestamp (slot) each view is made from. The loader sends each drawn timestamp once:
# seco's query and its third key are both t0, so a sample moves 3 timestamps for 4 views.
VIEW_SLOTS = {"seco": (0, 1, 2, 0), "moco": (0, 0), "moco-tp": (0, 1)}


def augments_before_crop(method: str, order: str) -> bool:
    """order reference: as the reference does it per method: its seco dataset augments the whole image
    and crops afterwards, its moco and moco-tp datamodules use MoCo-v2's crop-first transform.
    order moco: crop first for every method."""
    return order == "reference" and method == "seco"


def draw_slots(method: str, timestamps: int, rng: np.random.Generator) -> list[int]:
    """The timestamps one sample draws, with replacement, as the reference's np.random.choice does.

    seco: t0, t1, t2, for q = t0, k0 = aug(t1), k1 = t2, k2 = aug(t0). moco: one timestamp, two
    augmentations of it. moco-tp: two timestamps, both augmented (MoCo-v2+TP).
    """
    return [int(t) for t in rng.integers(0, timestamps, max(VIEW_SLOTS[method]) + 1)]


def input_uint8(pixels: np.ndarray, bands: list[str], input_bands: tuple[str, ...] | list[str] = RGB) -> np.ndarray:
    """(T, C, H, W) uint16 reflectance in `bands` order -> (T, len(input_bands), H, W) uint8, each band stretched."""
    order = [bands.index(band) for band in input_bands]
    low = np.array([STRETCH[b][0] for b in input_bands], dtype=np.float32)[None, :, None, None]
    high = np.array([STRETCH[b][1] for b in input_bands], dtype=np.float32)[None, :, None, None]
    scaled = (pixels[:, order].astype(np.float32) - low) / (high - low)
    return np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)
