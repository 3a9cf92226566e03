"""The reference's augmentations as a few batched kernels on the training device.

Every view is random-resized-cropped and normalised; the views the method marks as augmented are also
flipped and get MoCo-v2's colour jitter, grayscale and blur for the paper's RGB, or SSL4EO-S12's
brightness, contrast, band-mean grey and blur for any other input bands. Each sample draws its own
parameters from the device's generator, and the ops a batch dispatches do not depend on its size (no
per-sample loops, no host syncs), so augmentation keeps pace with the model on the GPU. The few places
where the output differs from the reference's are said at the functions concerned;
tests/pretrain/test_augment.py and test_augment_multispectral.py compare the output statistics with
the reference pipelines.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from secoctl.model_card import RGB_BANDS, normalisation

CROP_SCALE, CROP_RATIO, CROP_TRIES = (0.2, 1.0), (3 / 4, 4 / 3), 10
JITTER_P, GREY_P, BLUR_P, FLIP_P = 0.8, 0.2, 0.5, 0.5
BRIGHTNESS = CONTRAST = SATURATION = 0.4  # ColorJitter(0.4, 0.4, 0.4, 0.1)
HUE = 0.1
BLUR_SIGMA = (0.1, 2.0)
BLUR_RADIUS = math.ceil(3 * BLUR_SIGMA[1])
GREY = (0.299, 0.587, 0.114)  # PIL's convert("L"), which grayscale, contrast and saturation use
CONTRASTED, SATURATED, HUED = 1, 2, 3  # ColorJitter's op indices; 0 is brightness


def crop_boxes(count: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(count, 4) boxes x0, y0, x1, y1 drawn as torchvision's RandomResizedCrop.get_params does."""
    draws = torch.rand(count, 2 * CROP_TRIES + 2, device=device)
    area = height * width * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * draws[:, :CROP_TRIES])
    low, high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    aspect = torch.exp(low + (high - low) * draws[:, CROP_TRIES : 2 * CROP_TRIES])
    tried_w, tried_h = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (tried_w >= 1) & (tried_w <= width) & (tried_h >= 1) & (tried_h <= height)
    first = fits.byte().argmax(1, keepdim=True)  # the first try that fits
    fallback_w, fallback_h = _fallback(height, width)
    found = fits.any(1)
    w = torch.where(found, tried_w.gather(1, first)[:, 0], fallback_w)
    h = torch.where(found, tried_h.gather(1, first)[:, 0], fallback_h)
    top = torch.where(found, (draws[:, -2] * (height - h + 1)).floor(), ((height - h) / 2).floor())
    left = torch.where(found, (draws[:, -1] * (width - w + 1)).floor(), ((width - w) / 2).floor())
    return torch.stack([left, top, left + w, top + h], 1)


def _fallback(height: int, width: int) -> tuple[int, int]:
    """The crop size torchvision falls back to after 10 misses: the whole image, cut to the ratio range."""
    if width / height < CROP_RATIO[0]:
        return width, round(width / CROP_RATIO[0])
    if width / height > CROP_RATIO[1]:
        return round(height * CROP_RATIO[1]), height
    return width, height


def _pil_bilinear(start: torch.Tensor, extent: torch.Tensor, size: int, length: int) -> torch.Tensor:
    """(N, size, length) weights of PIL's bilinear resize of [start, start + extent) to size pixels.

    As Pillow's precompute_coeffs: a triangle widened by the downscale factor (its antialiasing),
    centred on each output pixel, over the cropped pixels only, normalised.
    """
    scale = extent / size
    widening = scale.clamp(min=1)[:, None, None]
    centre = start[:, None] + (torch.arange(size, device=start.device) + 0.5) * scale[:, None]
    pixel = torch.arange(length, device=start.device) + 0.5
    weights = (1 - (pixel - centre[:, :, None]).abs() / widening).clamp_(min=0)
    weights = weights * ((pixel >= start[:, None]) & (pixel < (start + extent)[:, None]))[:, None]
    return weights / weights.sum(2, keepdim=True)


def resample(images: torch.Tensor, rows: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """images[rows[k]] inside boxes[k] (x0, y0, x1, y1, pixel edges), resized to size × size as PIL does:
    one batched matrix product each way, with PIL's antialiased bilinear weights."""
    left, top, right, bottom = boxes.unbind(1)
    vertical = _pil_bilinear(top, bottom - top, size, images.shape[-2])[:, None]
    horizontal = _pil_bilinear(left, right - left, size, images.shape[-1])[:, None]
    return vertical @ images[rows] @ horizontal.transpose(2, 3)


def _grey_weights(device: torch.device) -> torch.Tensor:
    """GREY as a tensor made on the device: one built on the host would be a copy that waits for the device."""
    channel = torch.arange(3, device=device)
    return torch.where(channel == 0, GREY[0], torch.where(channel == 1, GREY[1], GREY[2]))


def _affine(images: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """matrix @ pixel + offset for every pixel, clamped to [0, 1]: (N, 3, H, W), (N, 3, 3), (N, 3)."""
    flat = images.flatten(2)
    return torch.baddbmm(offset[:, :, None], matrix, flat).clamp_(0, 1).view_as(images)


def _stage(images: torch.Tensor, factors: torch.Tensor, kinds: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation steps in their per-sample order, as one affine map.

    factors (N, steps): 1 where a step does nothing; kinds (N, steps): which op each step is;
    final (N, 3, 3): a matrix applied after them (grayscale). Every step is f·x + (1 - f)·y, with y
    black (brightness), the grey level of the image's mean (contrast) or of the pixel (saturation);
    the mean moves as the pixels do, so it is tracked through the steps from the input's.
    """
    grey = _grey_weights(images.device)
    eye = torch.eye(3, device=images.device)
    towards_grey = (1 - factors) * (kinds == SATURATED)
    steps = factors[..., None, None] * eye + towards_grey[..., None, None] * grey.expand(3, 3)
    pulls = (1 - factors) * (kinds == CONTRASTED)
    start = images.mean((2, 3))
    mean, matrix = start, eye.expand_as(final)
    for step in range(factors.shape[1]):
        mean = (steps[:, step] @ mean[:, :, None])[:, :, 0] + pulls[:, step, None] * (mean @ grey)[:, None]
        matrix = steps[:, step] @ matrix
    mean, matrix = (final @ mean[:, :, None])[:, :, 0], final @ matrix
    return _affine(images, matrix, mean - (matrix @ start[:, :, None])[:, :, 0])


def _shift_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate every pixel's HSV hue by shift[n] turns; value and saturation stay (torchvision's maths)."""
    high, low = images.amax(1, keepdim=True), images.amin(1, keepdim=True)
    spread = high - low
    red, green, blue = ((high - images) / torch.where(spread > 0, spread, 1)).unbind(1)
    r, g, _ = images.unbind(1)
    sixths = torch.where(high[:, 0] == r, blue - green, torch.where(high[:, 0] == g, 2 + red - blue, 4 + green - red))
    hue = torch.remainder(sixths[:, None] + 6 * shift[:, None, None, None], 6)
    offsets = 5 - 2 * torch.arange(3, device=images.device)  # 5, 3, 1 for red, green, blue
    channel = torch.remainder(offsets[:, None, None] + hue, 6)
    return high - spread * torch.minimum(channel, 4 - channel).clamp_(0, 1)


def jitter_and_grey(images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, then RandomGrayscale(p 0.2), of (N, 3, H, W) in [0, 1].

    draws (N, 10), uniform in [0, 1): the order (4), the factors (4), whether to jitter, whether to grey.
    Brightness, contrast and saturation are affine maps of a pixel and its image's mean, so the steps before
    and after hue (in each sample's order) compose into one map each, grayscale joining the second; hue is
    an exact HSV rotation in between. Unlike torchvision on PIL images, values are clamped to [0, 1] after each
    composed map rather than after each step, nothing is rounded to 8 bits in between, and the hue shift is
    continuous where PIL's moves in 1/255 turns: with the same draws, 1 in 8 jittered images of saturated
    colour tiles differs somewhere by more than one level (mean 0.36 levels, at most 29).
    """
    count = images.shape[0]
    order = draws[:, :4].argsort(1)  # torch.randperm(4) per sample
    op = torch.arange(4, device=images.device)  # also each step's position in the order
    unchanged = (op != HUED).to(images.dtype)  # factors 1, 1, 1 and hue shift 0
    spread = torch.where(op == HUED, HUE, BRIGHTNESS)  # BRIGHTNESS = CONTRAST = SATURATION
    factors = torch.where(draws[:, 8:9] < JITTER_P, unchanged + spread * (2 * draws[:, 4:8] - 1), unchanged)
    ordered = factors.gather(1, order)
    hue_at = (order == HUED).byte().argmax(1, keepdim=True)
    eye = torch.eye(3, device=images.device)
    to_grey = torch.where((draws[:, 9] < GREY_P)[:, None, None], _grey_weights(images.device).expand(3, 3), eye)
    images = _stage(images, torch.where(op < hue_at, ordered, 1), order, eye.expand(count, 3, 3))
    images = _shift_hue(images, factors[:, HUED])
    return _stage(images, torch.where(op > hue_at, ordered, 1), order, to_grey)


def blur(images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """GaussianBlur(σ ∈ [0.1, 2]) with p 0.5 per sample: one separable grouped convolution.

    draws (N, 2), uniform in [0, 1): whether to blur, σ. Each sample's kernel is a sampled Gaussian of radius
    3 σ_max (PIL's is three box passes of the same variance), a unit impulse where not applied; edges are
    replicated as PIL extends them.
    """
    count, channels, height, width = images.shape
    sigma = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * draws[:, 1:]
    taps = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, device=images.device, dtype=images.dtype)
    gauss = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernels = torch.where(draws[:, :1] < BLUR_P, gauss / gauss.sum(1, keepdim=True), (taps == 0).to(images.dtype))
    kernels = kernels.repeat_interleave(channels, 0)
    padded = F.pad(images, (BLUR_RADIUS,) * 4, mode="replicate").view(1, count * channels, height + 2 * BLUR_RADIUS, -1)
    vertical = F.conv2d(padded, kernels[:, None, :, None], groups=count * channels)
    return F.conv2d(vertical, kernels[:, None, None, :], groups=count * channels).view_as(images)


def spectral_jitter_and_grey(images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """SSL4EO-S12's RandomApply([RandomBrightness(0.4), RandomContrast(0.4)], p 0.8), then ToGray with p 0.2,
    of (N, C, H, W) in [0, 1], any C.

    draws (N, 4), uniform in [0, 1): the brightness factor, the contrast factor, whether to jitter, whether to grey.
    Brightness scales every band by one factor; contrast scales each band about its own mean over the image;
    grey is the mean of the bands (no luma weights exist for N bands). Hue and saturation are defined for RGB
    only, and SSL4EO-S12 drops them too. Values are clamped to [0, 1] after each step, as torchvision's jitter
    clamps, where SSL4EO-S12's uint8 casts wrap and truncate.
    """
    jittered = draws[:, 2] < JITTER_P
    brightness = torch.where(jittered, 1 + BRIGHTNESS * (2 * draws[:, 0] - 1), 1)[:, None, None, None]
    contrast = torch.where(jittered, 1 + CONTRAST * (2 * draws[:, 1] - 1), 1)[:, None, None, None]
    images = (images * brightness).clamp_(0, 1)
    band_mean = images.mean((2, 3), keepdim=True)
    images = ((images - band_mean) * contrast + band_mean).clamp_(0, 1)
    return torch.where((draws[:, 3] < GREY_P)[:, None, None, None], images.mean(1, keepdim=True), images)


class SpectralArtificial(nn.Module):
    """SSL4EO-S12's brightness, contrast, band-mean grey and blur of whole images, (N, C, H, W) in [0, 1]
    (zhu-xlab/SSL4EO-S12, pretrain_moco_v2_s2c.py's train_transforms and rs_transforms_uint8.py)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        draws = torch.rand(images.shape[0], 6, device=images.device)
        return blur(spectral_jitter_and_grey(images, draws[:, :4]), draws[:, 4:])


class Artificial(nn.Module):
    """Colour jitter, grayscale and blur of whole images, (N, 3, H, W) in [0, 1]; the flip comes after the crop
    (the crop's offset is uniform over the positions that fit, so mirroring a crop and cropping a mirrored
    image give the same distribution)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        draws = torch.rand(images.shape[0], 12, device=images.device)
        return blur(jitter_and_grey(images, draws[:, :10]), draws[:, 10:])


class ResizedCrop(nn.Module):
    """RandomResizedCrop(size, scale=(0.2, 1)) of chosen rows of a batch, each row its own box."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """A random-resized crop of images[rows[k]] for every k."""
        boxes = crop_boxes(len(rows), images.shape[-2], images.shape[-1], images.device)
        return resample(images, rows, boxes, self.size)


class BatchAugment(nn.Module):
    def __init__(
        self,
        size: int,
        augmented: tuple[bool, ...],
        augment_first: bool,
        view_slots: tuple[int, ...],
        bands: tuple[str, ...] | list[str] = RGB_BANDS,
    ):
        super().__init__()
        if len(augmented) != len(view_slots):
            raise ValueError(f"{len(augmented)} augmented flags for {len(view_slots)} views")
        self.augmented, self.augment_first, self.view_slots = augmented, augment_first, view_slots
        self.crop = ResizedCrop(size)
        self.artificial = Artificial() if tuple(bands) == RGB_BANDS else SpectralArtificial()
        mean, std = normalisation(bands)
        # Index tensors live on the device with the module, so indexing never copies from the host.
        augmented_views = [view for view, marked in enumerate(augmented) if marked]
        for name, value in {
            "mean": torch.tensor(mean)[:, None, None],
            "std": torch.tensor(std)[:, None, None],
            "slot_of_view": torch.tensor(view_slots)[:, None],
            "marked": torch.tensor(augmented)[:, None],
            "augmented_views": torch.tensor(augmented_views, dtype=torch.long),
            "augmented_slots": torch.tensor([view_slots[v] for v in augmented_views], dtype=torch.long),
            "number": torch.cumsum(torch.tensor(augmented), 0)[:, None] - 1,
        }.items():
            self.register_buffer(name, value, persistent=False)

    @torch.no_grad()
    def forward(self, slots: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (batch, slots, C, H, W) on the training device -> one normalised float32 batch per view,
        (batch, C, size, size), channels_last. View v is made from slots[:, view_slots[v]]; views with
        augmented[v] get the artificial augmentation. augment_first: jitter/grey/blur/flip the whole
        image, then crop (the reference's seco order); else crop first, then augment (MoCo-v2's order)."""
        batch, slot_count = slots.shape[:2]
        views, augmented_count = len(self.view_slots), len(self.augmented_views)
        images = slots.flatten(0, 1).float().div_(255)  # row b * slot_count + s
        samples = torch.arange(batch, device=slots.device)
        rows = samples * slot_count + self.slot_of_view  # (views, batch): the source row of every crop
        if self.augment_first:
            whole = images.unflatten(0, (batch, slot_count))[:, self.augmented_slots].flatten(0, 1)
            augmented = self.artificial(whole)  # row b * augmented_count + (the view's place among them)
            rows = torch.where(self.marked, batch * slot_count + samples * augmented_count + self.number, rows)
            crops = self.crop(torch.cat([images, augmented]), rows.flatten())
        else:
            crops = self.crop(images, rows.flatten()).unflatten(0, (views, batch))
            chosen = crops[self.augmented_views].flatten(0, 1)
            crops[self.augmented_views] = self.artificial(chosen).unflatten(0, (augmented_count, batch))
            crops = crops.flatten(0, 1)
        flips = (self.marked & (torch.rand(views, batch, device=slots.device) < FLIP_P)).flatten()
        crops = torch.where(flips[:, None, None, None], crops.flip(-1), crops)
        out = crops.sub_(self.mean).div_(self.std).contiguous(memory_format=torch.channels_last)
        return list(out.split(batch))
