"""The STAC Item (Machine Learning Model extension) that travels with published weights.

It says what a user needs to feed the backbone correctly: the bands and their order, the
reflectance stretch and the ImageNet normalisation, the input size, and how it was trained.
`secoctl:input` repeats the normalisation in one machine-readable place for `secoctl.weights.load`.
The constants here are the ones the pretrain stage applies (jobs/pretrain imports them), so what
a published item says and what training did cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The reference's fixed stretch of each stored uint8 band (B4 0-129, B3 2-103, B2 3-88 of 255),
# in reflectance × 10000 as our shards keep it.
RGB_BANDS = ("B04", "B03", "B02")
STRETCH_UINT8 = {"B04": (0, 129), "B03": (2, 103), "B02": (3, 88)}
FEATURES = {"resnet18": 512, "resnet50": 2048}


def stretch(band: str) -> tuple[float, float]:
    low, high = STRETCH_UINT8[band]
    return low * 10_000 / 255, high * 10_000 / 255


def input_description(input_size: int) -> dict[str, Any]:
    return {"bands": list(RGB_BANDS), "reflectance_scale": 10_000,
            "stretch": {band: list(stretch(band)) for band in RGB_BANDS},
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "size": input_size}


def model_item(name: str, version: str, backbone: str, input_size: int, parameters: int,
               provenance: dict[str, Any], metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """A STAC Item dict with MLM fields; `provenance` holds the training spec or the source file."""
    import pystac
    from pystac.extensions import mlm

    item = pystac.Item(id=f"{name}-{version}", geometry=None, bbox=None,
                       datetime=datetime.now(timezone.utc), properties={})
    bands = [mlm.ModelBand.create(name=band) for band in RGB_BANDS]
    # MLM's value_scaling holds one rule for all bands; ours differs per band, so the input
    # points at the function that applies it (its parameters are in secoctl:input).
    scaling = mlm.ProcessingExpression.create(format="python", expression="secoctl.weights:input_transform")
    model_input = mlm.ModelInput.create(
        name="Sentinel-2 L2A RGB", bands=bands, pre_processing_function=scaling,
        input=mlm.InputStructure.create(shape=[-1, 3, input_size, input_size],
                                        dim_order=["batch", "channel", "height", "width"], data_type="float32"),
        description="Surface reflectance × 10000 of B04, B03, B02; each band min-max stretched as given, "
                    "clipped to [0, 1], then normalised with ImageNet's mean and std.",
        resize_type=mlm.ResizeType.INTERPOLATION_LINEAR,
    )
    model_output = mlm.ModelOutput.create(
        name="features", tasks=[mlm.TaskType.CLASSIFICATION, mlm.TaskType.SIMILARITY_SEARCH],
        result=mlm.ResultStructure.create(shape=[-1, FEATURES[backbone]], dim_order=["batch", "embedding"],
                                          data_type="float32"),
        description="Globally pooled backbone features (the classifier is removed).",
    )
    extension = mlm.MLMExtension.ext(item, add_if_missing=True)
    extension.apply(name=name, architecture="ResNet", tasks=[mlm.TaskType.CLASSIFICATION, mlm.TaskType.SIMILARITY_SEARCH],
                    input=[model_input], output=[model_output], framework="pytorch",
                    total_parameters=parameters, pretrained=True,
                    pretrained_source="Seasonal Contrast (Mañas et al., ICCV 2021)")
    item.properties.update({"secoctl:backbone": backbone, "secoctl:version": version,
                            "secoctl:input": input_description(input_size), "secoctl:provenance": provenance})
    if metrics:
        item.properties["secoctl:metrics"] = metrics
    item.add_asset("weights", pystac.Asset(href="./model.safetensors", media_type="application/octet-stream; application=safetensors",
                                           roles=["mlm:model", "mlm:weights"], title=f"{backbone} backbone, torchvision key names"))
    mlm.AssetDetailedMLMExtension.ext(item.assets["weights"], add_if_missing=True).artifact_type = "safetensors.torch.save_file"
    return item.to_dict(include_self_link=False)
