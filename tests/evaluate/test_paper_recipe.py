"""recipe paper, point by point against the reference (ServiceNow/seasonal-contrast); each test names its point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from jobs.common.backbone import build_backbone
from jobs.evaluate import change_detection, classification, datasets, reference_inputs
from jobs.evaluate.reference_unet import ReferenceUNet
from jobs.localcloud import eurosat
from secoctl.spec import Evaluation

CPU = torch.device("cpu")


def scenes(count: int, size: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Bitemporal reflectance × 10000 (2, 3, size, size) with a change mask, random."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(300, 4000, (2, 3, size, size), generator=generator).float(),
            torch.rand((size, size), generator=generator) < 0.2,
        )
        for _ in range(count)
    ]


# --- OSCD (main_oscd.py, models/segmentation.py, datasets/oscd_*.py) -----------------------------


def test_oscd_leaves_the_encoder_out_of_the_optimizer_but_its_batchnorm_in_train_mode():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18")
    weights = {k: v.clone() for k, v in backbone.named_parameters()}
    running = backbone.bn1.running_mean.clone()
    model = ReferenceUNet(backbone, "resnet18")
    encoder = {id(p) for p in model.encoder.parameters()}
    head = model.head_parameters()
    assert encoder and not encoder & {id(p) for p in head}
    assert len(head) + len(encoder) == len(list(model.parameters()))
    transform = reference_inputs.transform_for("oscd", "paper", 224, CPU)
    change_detection.evaluate_paper(backbone, "resnet18", scenes(1, 96), scenes(1, 96, seed=1), transform, CPU, 1)
    assert all(torch.equal(p, weights[k]) for k, p in backbone.named_parameters())  # no weight moved ...
    assert not torch.equal(backbone.bn1.running_mean, running)  # ... its BatchNorm statistics did


def test_oscd_head_fuses_absolute_differences_of_conv1_and_layer1_to_4():
    torch.manual_seed(0)
    model = ReferenceUNet(build_backbone("resnet18"), "resnet18").eval()
    before, after = torch.rand(1, 3, 96, 96), torch.rand(1, 3, 96, 96)
    features = model.encoder(before, after)
    assert [tuple(f.shape[1:]) for f in features] == [
        (64, 48, 48),
        (64, 24, 24),
        (128, 12, 12),
        (256, 6, 6),
        (512, 3, 3),
    ]
    conv1 = model.encoder.encoder[0]
    assert torch.allclose(features[0], (conv1(before) - conv1(after)).abs())  # conv1's output, before its BN
    with torch.no_grad():
        assert torch.allclose(model(before, after), model(after, before))  # |f1 - f2| is symmetric
        assert all(float(f.abs().max()) == 0 for f in model.encoder(before, before))  # no change, no signal


def test_oscd_head_upsamples_by_nearest_neighbour_and_drops_channels_at_0_3():
    torch.manual_seed(0)
    model = ReferenceUNet(build_backbone("resnet18"), "resnet18").eval()
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout2d)]
    assert [d.p for d in dropouts] == [0.3]
    assert not any(isinstance(m, (nn.Upsample, nn.ConvTranspose2d)) for m in model.modules())
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 96, 96), torch.rand(1, 3, 96, 96))[0]
    # The last step is a nearest ×2 upsampling followed by a 1×1 convolution: constant on 2×2 blocks.
    assert logits.shape == (96, 96)
    assert torch.equal(logits[0::2, 0::2], logits[1::2, 1::2]) and torch.equal(logits[0::2, 0::2], logits[0::2, 1::2])


def test_oscd_inputs_are_its_own_quantiles_without_imagenet_statistics():
    transform = reference_inputs.transform_for("oscd", "paper", 224, CPU)
    low = torch.tensor([426.0, 667.0, 885.0]).view(3, 1, 1).expand(3, 100, 130)
    high = torch.tensor([3698.0, 2969.0, 2620.0]).view(3, 1, 1).expand(3, 100, 130)
    assert torch.equal(transform(low), torch.zeros(3, 100, 130))  # native size kept
    assert torch.equal(transform(high), torch.ones(3, 100, 130))
    assert torch.equal(transform(high * 2), torch.ones(3, 100, 130))  # clipped


def test_oscd_tiles_are_the_96_px_grid_zero_past_the_edge():
    image, mask = torch.full((2, 3, 100, 200), 1000.0), torch.ones(100, 200, dtype=torch.bool)
    images, masks = change_detection.grid_tiles([(image, mask)])
    assert images.shape == (6, 2, 3, 96, 96) and masks.shape == (6, 96, 96)  # 2 rows × 3 columns
    assert torch.equal(images[0], torch.full((2, 3, 96, 96), 1000.0))
    last = masks[5]  # row 1, column 2: 4 rows (96..99) × 8 columns (192..199) of the city, the rest padding
    assert int(last.sum()) == 4 * 8 and int(images[5].count_nonzero()) == 2 * 3 * 4 * 8


def test_oscd_training_tiles_are_flipped_and_turned_by_quarter_turns():
    tile = torch.arange(96 * 96, dtype=torch.float32).view(96, 96)
    images, masks = tile.expand(64, 2, 3, 96, 96), tile.expand(64, 96, 96) > 4000
    out_images, out_masks = change_detection.flips_and_rotations(images, masks, torch.Generator().manual_seed(0))
    dihedral = [torch.rot90(t, k) for t in (tile, tile.flip(-1)) for k in range(4)]
    found = set()
    for image, mask in zip(out_images, out_masks):
        index = next(i for i, d in enumerate(dihedral) if torch.equal(image[0, 0], d))
        assert torch.equal(mask, dihedral[index] > 4000)  # the mask turns with its tile
        found.add(index)
    assert found == set(range(8))


def test_oscd_reports_the_paper_per_batch_scores_and_the_global_ones():
    truth = [torch.tensor([True, True, False, False]), torch.tensor([True, False, False, False])]
    predicted = [torch.tensor([True, False, False, False]), torch.tensor([True, True, True, False])]
    result = change_detection.per_batch_and_global(predicted, truth)
    # batch 1: P 1, R 0.5, F1 2/3; batch 2: P 1/3, R 1, F1 0.5. Globally: tp 2, 4 predicted, 3 true.
    assert result["precision"] == pytest.approx((1 + 1 / 3) / 2) and result["recall"] == pytest.approx(0.75)
    assert result["f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert result["precision_global"] == pytest.approx(0.5) and result["recall_global"] == pytest.approx(2 / 3)
    assert result["f1_global"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


# --- EuroSAT (main_eurosat.py, datasets/eurosat_*.py) ---------------------------------------------


def test_eurosat_sees_64_px_rgb_scaled_to_unit_without_imagenet_statistics():
    transform = reference_inputs.transform_for("eurosat", "paper", 224, CPU)
    out = transform(torch.randint(0, 6000, (5, 3, 64, 64)).float())
    assert out.shape == (5, 3, 64, 64) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, torch.round(out * 255) / 255)  # 8-bit values, as ToTensor gives them


def test_eurosat_probe_trains_in_batches_of_32_with_the_backbone_batchnorm_in_train_mode(tmp_path: Path):
    root = eurosat.make(tmp_path / "eurosat", {"train": 4, "val": 1, "test": 1})  # 40 training images
    splits = {s: datasets.open_split("eurosat", str(root), s, False) for s in ("train", "val", "test")}
    torch.manual_seed(0)
    backbone = build_backbone("resnet18")
    weight = backbone.conv1.weight.clone()
    running = backbone.bn1.running_mean.clone()
    calls = []
    backbone.register_forward_hook(lambda module, inputs, output: calls.append((module.training, len(inputs[0]))))
    transform = reference_inputs.transform_for("eurosat", "paper", 224, CPU)
    result = classification.eurosat_paper(backbone, splits, transform, CPU, 2, 1.0, 512)
    training = [size for mode, size in calls if mode]
    assert training == [32, 32]  # 40 images, batch 32, drop_last: one batch per epoch
    assert [mode for mode, _ in calls[len(training) :]] == [False] * (len(calls) - len(training))  # then evaluated
    assert torch.equal(backbone.conv1.weight, weight) and not torch.equal(backbone.bn1.running_mean, running)
    assert 0 <= result["accuracy"] <= 1 and result["train_samples"] == 40


# --- BigEarthNet (main_bigearthnet.py, models/ssl_finetuner.py, datasets/bigearthnet_*.py) -------


def test_bigearthnet_is_stretched_over_mean_plus_minus_two_sigma_and_resized_bicubic_to_128():
    transform = reference_inputs.transform_for("bigearthnet", "paper", 224, CPU)
    mean = torch.tensor([590.23569706, 614.21682446, 429.9430203]).view(3, 1, 1)
    std = torch.tensor([675.88746967, 582.87945694, 572.41639287]).view(3, 1, 1)
    flat = transform((mean + 2 * std).expand(3, 120, 120))
    assert flat.shape == (3, 128, 128) and torch.allclose(flat, torch.ones_like(flat))
    assert transform.resize == "bicubic"
    assert torch.allclose(transform(mean.expand(3, 120, 120)), torch.full((3, 128, 128), 128 / 255), atol=1e-6)


def test_bigearthnet_label_fractions_are_drawn_with_replacement_as_the_reference_does():
    drawn = classification.reference_subset(1000, 0.5)
    assert drawn == [int(i) for i in np.random.default_rng(42).choice(range(1000), 500)]
    assert len(drawn) == 500 and len(set(drawn)) < 500


class Patches(torch.utils.data.Dataset):
    """BigEarthNet samples as open_split hands them to the RGB recipes (B04, B03, B02), 19 labels."""

    num_classes = 19

    def __init__(self, count: int):
        generator = torch.Generator().manual_seed(count)
        self.images = torch.randint(0, 3000, (count, 3, 120, 120), generator=generator).float()
        self.labels = (torch.rand(count, 19, generator=generator) < 0.3).long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": self.labels[index]}


def test_bigearthnet_head_is_dropout_then_linear_on_a_backbone_in_eval_mode():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18")
    running = backbone.bn1.running_mean.clone()
    modes = []
    backbone.register_forward_hook(lambda module, inputs, output: modes.append(module.training))
    splits = {"train": Patches(8), "val": Patches(4), "test": Patches(4)}
    transform = reference_inputs.transform_for("bigearthnet", "paper", 224, CPU)
    result = classification.bigearthnet_paper(backbone, splits, transform, CPU, 1, 1.0, 512, finetunes=False)
    assert not any(modes) and torch.equal(backbone.bn1.running_mean, running)  # on_train_epoch_start: eval()
    assert set(result) >= {"mAP", "mAP_global", "mAP_macro", "val_mAP"}
    assert classification.BIGEARTHNET_DROPOUT == 0.2


def test_bigearthnet_map_is_averaged_per_batch_beside_the_global_one():
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 19))
    torch.manual_seed(0)
    identity = reference_inputs.transform_for("bigearthnet", "paper", 224, CPU)
    data = Patches(6)
    result = classification.per_batch_map(model, data, identity, CPU, 3)
    with torch.no_grad():
        logits = model(identity(data.images))
    batches = [classification.micro_ap(logits[i : i + 3], data.labels[i : i + 3]) for i in (0, 3)]
    assert result["mAP"] == pytest.approx(sum(batches) / 2)
    assert result["mAP_global"] == pytest.approx(classification.micro_ap(logits, data.labels))


def test_bigearthnet_drops_the_snow_and_cloud_patches_listed_beside_the_data(tmp_path: Path):
    class Folders:
        folders = [{"s2": f"/data/S2A_{n}"} for n in range(4)]

    (tmp_path / "patches_with_seasonal_snow.csv").write_text("S2A_1\n")
    (tmp_path / "patches_with_cloud_and_shadow.csv").write_text("S2A_3\n")
    kept = datasets.without_snow_and_cloud(Folders(), str(tmp_path))
    assert [Path(f["s2"]).name for f in kept.folders] == ["S2A_0", "S2A_2"]


# --- the spec -----------------------------------------------------------------------------------


def test_the_paper_recipe_is_the_default_and_modern_keeps_its_own_results_folder():
    assert Evaluation(task="oscd").recipe == "paper" and Evaluation(task="oscd").key == "oscd-finetune-100pct"
    assert Evaluation(task="eurosat", recipe="modern").key == "eurosat-linear-100pct-modern"
    with pytest.raises(ValueError, match="recipe paper only probes EuroSAT"):
        Evaluation(task="eurosat", protocol="finetune")
