"""The STAC Item (Machine Learning Model extension) that travels with published weights.

It says what a user needs to feed the backbone correctly: the bands and their order, each band's
reflectance stretch and the rule it comes from, the normalisation, the input size, and how it was
trained.
`secoctl:input` repeats the normalisation in one machine-readable place for `secoctl.weights.load`.
The constants here are the ones the pretrain stage applies (jobs/pretrain imports them), so what
a published item says and what training did cannot drift apart.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
EO_SCHEMA = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
MLM_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_.\-\s]+[a-zA-Z0-9]")  # MLM's mlm:name pattern
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
SSL4EO_S2_L2A_MEAN = dict(
    zip(
        ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
        (
            752.40087073,
            884.29673756,
            1144.16202635,
            1297.47289228,
            1624.90992062,
            2194.6423161,
            2422.21248945,
            2517.76053101,
            2581.64687018,
            2645.51888987,
            2368.51236873,
            1805.06846033,
        ),
    )
)
SSL4EO_S2_L2A_STD = dict(
    zip(
        SSL4EO_S2_L2A_MEAN,
        (
            1108.02887453,
            1155.15170768,
            1183.6292542,
            1368.11351514,
            1370.265037,
            1355.55390699,
            1416.51487101,
            1474.78900051,
            1439.3086061,
            1582.28010962,
            1455.52084939,
            1343.48379601,
        ),
    )
)
KNOWN_BANDS = tuple(SSL4EO_S2_L2A_MEAN)  # the bands a stretch rule exists for: every L2A band but B10
# Each band's (common name, centre wavelength µm, full width at half maximum µm). Sentinel-2 MSI: ESA's values as
# stactools' Sentinel-2 package carries them (stactools-packages/sentinel2 src/stactools/sentinel2/constants.py
# SENTINEL_BANDS). Landsat 8/9 OLI: stactools' Landsat package's Collection 2 Level-2 SR_B1-SR_B7 (L8_SR_BANDS).
S2_BANDS = {
    "B01": ("coastal", 0.443, 0.027),
    "B02": ("blue", 0.490, 0.098),
    "B03": ("green", 0.560, 0.045),
    "B04": ("red", 0.665, 0.038),
    "B05": ("rededge", 0.704, 0.019),
    "B06": ("rededge", 0.740, 0.018),
    "B07": ("rededge", 0.783, 0.028),
    "B08": ("nir", 0.842, 0.145),
    "B8A": ("nir08", 0.865, 0.033),
    "B09": ("nir09", 0.945, 0.026),
    "B10": ("cirrus", 1.3735, 0.075),
    "B11": ("swir16", 1.610, 0.143),
    "B12": ("swir22", 2.190, 0.242),
}
OLI_BANDS = {
    "SR_B1": ("coastal", 0.44, 0.02),
    "SR_B2": ("blue", 0.48, 0.06),
    "SR_B3": ("green", 0.56, 0.06),
    "SR_B4": ("red", 0.65, 0.04),
    "SR_B5": ("nir08", 0.86, 0.03),
    "SR_B6": ("swir16", 1.6, 0.08),
    "SR_B7": ("swir22", 2.2, 0.2),
}
BAND_TABLE = {**S2_BANDS, **OLI_BANDS}
REFERENCE_RULE = "quantiles: ServiceNow/seasonal-contrast datasets/seco_dataset.py QUANTILES"
SSL4EO_RULE = (
    "mean ± 2σ: zhu-xlab/SSL4EO-S12 src/benchmark/pretrain_ssl/datasets/SSL4EO/ssl4eo_dataset.py "
    "S2A_MEAN, S2A_STD, normalize()"
)


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
    return {
        "bands": list(bands),
        "reflectance_scale": 10_000,
        "stretch": {band: list(stretch(band)) for band in bands},
        "stretch_rule": {band: stretch_rule(band) for band in bands},
        "mean": mean,
        "std": std,
        "size": input_size,
    }


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
        return (
            "Sentinel-2 L2A RGB",
            "Surface reflectance × 10000 of B04, B03, B02; each band min-max stretched as "
            "given, clipped to [0, 1], then normalised with ImageNet's mean and std.",
        )
    return (
        f"Sentinel-2 L2A, {len(bands)} bands",
        f"Surface reflectance × 10000 of {', '.join(bands)}; each band "
        "min-max stretched as given in secoctl:input (its rule in stretch_rule), clipped to [0, 1], then "
        "normalised with secoctl:input's mean and std; value_scaling gives both per band as one z-score.",
    )


def mlm_name(name: str) -> str:
    """MLM's mlm:name: a letter first, an alphanumeric last, at least 3 characters; weights names that are not
    (`1m`, `w`) are prefixed."""
    return name if MLM_NAME.fullmatch(name) else f"seco-{name}"


def band_objects(bands: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """EO extension (v1.1) band objects for the model asset, in tensor order: what MLM's input bands refer to."""
    return [
        {
            "name": band,
            "common_name": BAND_TABLE[band][0],
            "center_wavelength": BAND_TABLE[band][1],
            "full_width_half_max": BAND_TABLE[band][2],
        }
        for band in bands
    ]


def _model_input(described: dict[str, Any], input_size: int) -> Any:
    """MLM's description of the input: the bands in tensor order, their shape, and their z-scoring."""
    from pystac.extensions import mlm

    bands = described["bands"]
    input_name, input_text = _input_text(bands)
    # value_scaling gives the stretch and normalisation as one z-score; the clip and the 8-bit rounding between
    # them are the pre-processing function's.
    scaling = mlm.ProcessingExpression.create(format="python", expression="secoctl.weights:input_transform")
    model_input = mlm.ModelInput.create(
        name=input_name,
        bands=[mlm.ModelBand.create(name=band) for band in bands],
        pre_processing_function=scaling,
        input=mlm.InputStructure.create(
            shape=[-1, len(bands), input_size, input_size],
            dim_order=["batch", "bands", "height", "width"],
            data_type="float32",
        ),
        description=input_text,
    )
    # pystac writes value_scaling as one object, MLM holds a list (one object per band); pystac's enum spells
    # the linear resize "interpolate-linear", MLM's schema "interpolation-linear".
    model_input.properties["value_scaling"] = value_scaling(described)
    model_input.properties["resize_type"] = "interpolation-linear"
    return model_input


def _model_output(backbone: str) -> Any:
    from pystac.extensions import mlm

    return mlm.ModelOutput.create(
        name="features",
        tasks=[mlm.TaskType.CLASSIFICATION, mlm.TaskType.SIMILARITY_SEARCH],
        result=mlm.ResultStructure.create(
            shape=[-1, FEATURES[backbone]], dim_order=["batch", "embedding"], data_type="float32"
        ),
        description="Globally pooled backbone features (the classifier is removed).",
    )


def model_item(
    name: str,
    version: str,
    backbone: str,
    input_size: int,
    parameters: int,
    provenance: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    bands: tuple[str, ...] | list[str] = RGB_BANDS,
    described: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A STAC Item dict with MLM fields; `provenance` holds the training spec or the source file. `described`
    replaces the secoctl:input that `bands` would give (weights adapted to other bands carry their sources')."""
    import pystac
    from pystac.extensions import mlm

    described = described or input_description(input_size, bands)
    bands = described["bands"]
    item = pystac.Item(
        id=f"{name}-{version}", geometry=None, bbox=None, datetime=datetime.now(timezone.utc), properties={}
    )
    model_input, model_output = _model_input(described, input_size), _model_output(backbone)
    extension = mlm.MLMExtension.ext(item, add_if_missing=True)
    extension.apply(
        name=mlm_name(name),
        architecture="ResNet",
        tasks=[mlm.TaskType.CLASSIFICATION, mlm.TaskType.SIMILARITY_SEARCH],
        input=[model_input],
        output=[model_output],
        framework="pytorch",
        total_parameters=parameters,
        pretrained=True,
        pretrained_source="Seasonal Contrast (Mañas et al., ICCV 2021)",
    )
    item.properties.update(
        {
            "secoctl:backbone": backbone,
            "secoctl:version": version,
            "secoctl:input": described,
            "secoctl:provenance": provenance,
        }
    )
    if metrics:
        item.properties["secoctl:metrics"] = metrics
    item.add_asset(
        "weights",
        pystac.Asset(
            href="./model.safetensors",
            media_type="application/octet-stream; application=safetensors",
            roles=["mlm:model", "mlm:weights"],
            title=f"{backbone} backbone, torchvision key names",
        ),
    )
    mlm.AssetDetailedMLMExtension.ext(
        item.assets["weights"], add_if_missing=True
    ).artifact_type = "safetensors.torch.save_file"
    item.assets["weights"].extra_fields["eo:bands"] = band_objects(bands)
    written = item.to_dict(include_self_link=False)
    # The MLM version declared is the newest whose schema the item is tested against (pystac names its own).
    written["stac_extensions"] = [
        *(uri for uri in written["stac_extensions"] if "/mlm/" not in uri),
        MLM_SCHEMA,
        EO_SCHEMA,
    ]
    return written
