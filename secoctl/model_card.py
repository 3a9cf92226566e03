"""The STAC Item (Machine Learning Model extension) that travels with published weights.

It says what a user needs to feed the backbone correctly: the bands and their order, each band's
reflectance stretch and the rule it comes from, the normalisation, the input size, and how it was
trained.
`secoctl:input` repeats the normalisation in one machine-readable place for `secoctl.weights.load`.
The constants here are the ones the pretrain stage applies (jobs/pretrain imports them), so what
a published item says and what training did cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The reference's fixed stretch of each stored uint8 band (B4 0-129, B3 2-103, B2 3-88 of 255),
# in reflectance × 10000 as our shards keep it.
RGB_BANDS = ("B04", "B03", "B02")
STRETCH_UINT8 = {"B04": (0, 129), "B03": (2, 103), "B02": (3, 88)}
FEATURES = {"resnet18": 512, "resnet50": 2048}
# SSL4EO-S12's Sentinel-2 L2A band statistics, reflectance × 10000, "calculated from 50k data":
# S2A_MEAN and S2A_STD of zhu-xlab/SSL4EO-S12 src/benchmark/pretrain_ssl/datasets/SSL4EO/ssl4eo_dataset.py
# (commit 2156913c), whose ALL_BANDS_S2_L2A order (B1, ..., B9, B11, B12) is ours with two digits.
SSL4EO_S2_L2A_MEAN = dict(zip(
    ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
    (752.40087073, 884.29673756, 1144.16202635, 1297.47289228, 1624.90992062, 2194.6423161, 2422.21248945,
     2517.76053101, 2581.64687018, 2645.51888987, 2368.51236873, 1805.06846033)))
SSL4EO_S2_L2A_STD = dict(zip(
    SSL4EO_S2_L2A_MEAN,
    (1108.02887453, 1155.15170768, 1183.6292542, 1368.11351514, 1370.265037, 1355.55390699, 1416.51487101,
     1474.78900051, 1439.3086061, 1582.28010962, 1455.52084939, 1343.48379601)))
KNOWN_BANDS = tuple(SSL4EO_S2_L2A_MEAN)  # the bands a stretch rule exists for: every L2A band but B10
REFERENCE_RULE = "quantiles: ServiceNow/seasonal-contrast datasets/seco_dataset.py QUANTILES"
SSL4EO_RULE = ("mean ± 2σ: zhu-xlab/SSL4EO-S12 src/benchmark/pretrain_ssl/datasets/SSL4EO/ssl4eo_dataset.py "
               "S2A_MEAN, S2A_STD, normalize()")


def stretch(band: str) -> tuple[float, float]:
    """Reflectance × 10000 that maps to 0 and to 1 (255 stored): the reference's fixed quantiles for B04, B03,
    B02; SSL4EO-S12's mean ± 2σ for every other band, as its normalize() stretches its uint8 data."""
    if band in STRETCH_UINT8:
        low, high = STRETCH_UINT8[band]
        return low * 10_000 / 255, high * 10_000 / 255
    mean, std = SSL4EO_S2_L2A_MEAN[band], SSL4EO_S2_L2A_STD[band]
    return mean - 2 * std, mean + 2 * std


def stretch_rule(band: str) -> str:
    return REFERENCE_RULE if band in STRETCH_UINT8 else SSL4EO_RULE


def normalisation(bands: tuple[str, ...] | list[str]) -> tuple[list[float], list[float]]:
    """(mean, std) applied to the [0, 1] input: ImageNet's for the paper's RGB, as the reference does; for
    any other band list none (0 and 1), as SSL4EO-S12's MoCo pre-training feeds ToTensor's [0, 1] as is."""
    if tuple(bands) == RGB_BANDS:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [0.0] * len(bands), [1.0] * len(bands)


def input_description(input_size: int, bands: tuple[str, ...] | list[str] = RGB_BANDS) -> dict[str, Any]:
    mean, std = normalisation(bands)
    return {"bands": list(bands), "reflectance_scale": 10_000,
            "stretch": {band: list(stretch(band)) for band in bands},
            "stretch_rule": {band: stretch_rule(band) for band in bands},
            "mean": mean, "std": std, "size": input_size}


def value_scaling(described: dict[str, Any]) -> list[dict[str, Any]]:
    """MLM's value_scaling, one object per input band: the stretch and the normalisation of `described` (a
    secoctl:input) as the one z-score they make together, ((x - low) / (high - low) - mean) / std =
    (x - (low + mean (high - low))) / (std (high - low)); exact before the clip to [0, 1] and the 8-bit rounding,
    which the pre-processing function adds."""
    scaling = []
    for band, mean, std in zip(described["bands"], described["mean"], described["std"]):
        low, high = described["stretch"][band]
        scaling.append({"type": "z-score", "mean": low + mean * (high - low), "stddev": std * (high - low)})
    return scaling


def _input_text(bands: tuple[str, ...] | list[str]) -> tuple[str, str]:
    """The MLM input's name and description: the paper's RGB words kept as they were, N bands named."""
    if tuple(bands) == RGB_BANDS:
        return ("Sentinel-2 L2A RGB", "Surface reflectance × 10000 of B04, B03, B02; each band min-max stretched as "
                "given, clipped to [0, 1], then normalised with ImageNet's mean and std.")
    return (f"Sentinel-2 L2A, {len(bands)} bands", f"Surface reflectance × 10000 of {', '.join(bands)}; each band "
            "min-max stretched as given in secoctl:input (its rule in stretch_rule), clipped to [0, 1], then "
            "normalised with secoctl:input's mean and std; value_scaling gives both per band as one z-score.")


def model_item(name: str, version: str, backbone: str, input_size: int, parameters: int,
               provenance: dict[str, Any], metrics: dict[str, Any] | None = None,
               bands: tuple[str, ...] | list[str] = RGB_BANDS) -> dict[str, Any]:
    """A STAC Item dict with MLM fields; `provenance` holds the training spec or the source file."""
    import pystac
    from pystac.extensions import mlm

    item = pystac.Item(id=f"{name}-{version}", geometry=None, bbox=None,
                       datetime=datetime.now(timezone.utc), properties={})
    input_name, input_text = _input_text(bands)
    # MLM's value_scaling holds one rule for all bands; ours differs per band, so the input
    # points at the function that applies it (its parameters are in secoctl:input).
    scaling = mlm.ProcessingExpression.create(format="python", expression="secoctl.weights:input_transform")
    model_input = mlm.ModelInput.create(
        name=input_name, bands=[mlm.ModelBand.create(name=band) for band in bands], pre_processing_function=scaling,
        input=mlm.InputStructure.create(shape=[-1, len(bands), input_size, input_size],
                                        dim_order=["batch", "channel", "height", "width"], data_type="float32"),
        description=input_text,
        resize_type=mlm.ResizeType.INTERPOLATION_LINEAR,
    )
    model_output = mlm.ModelOutput.create(
        name="features", tasks=[mlm.TaskType.CLASSIFICATION, mlm.TaskType.SIMILARITY_SEARCH],
        result=mlm.ResultStructure.create(shape=[-1, FEATURES[backbone]], dim_order=["batch", "embedding"],
                                          data_type="float32"),
        description="Globally pooled backbone features (the classifier is removed).",
    )
    described = input_description(input_size, bands)
    # pystac writes value_scaling as one object; MLM 1.4 holds a list, one object per band.
    model_input.properties["value_scaling"] = value_scaling(described)
    extension = mlm.MLMExtension.ext(item, add_if_missing=True)
    extension.apply(name=name, architecture="ResNet", tasks=[mlm.TaskType.CLASSIFICATION, mlm.TaskType.SIMILARITY_SEARCH],
                    input=[model_input], output=[model_output], framework="pytorch",
                    total_parameters=parameters, pretrained=True,
                    pretrained_source="Seasonal Contrast (Mañas et al., ICCV 2021)")
    item.properties.update({"secoctl:backbone": backbone, "secoctl:version": version,
                            "secoctl:input": described, "secoctl:provenance": provenance})
    if metrics:
        item.properties["secoctl:metrics"] = metrics
    item.add_asset("weights", pystac.Asset(href="./model.safetensors", media_type="application/octet-stream; application=safetensors",
                                           roles=["mlm:model", "mlm:weights"], title=f"{backbone} backbone, torchvision key names"))
    mlm.AssetDetailedMLMExtension.ext(item.assets["weights"], add_if_missing=True).artifact_type = "safetensors.torch.save_file"
    return item.to_dict(include_self_link=False)
