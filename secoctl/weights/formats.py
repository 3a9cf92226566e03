"""What an export says about the weights, in each tool's own words: timm's `pretrained_cfg`, torchgeo's
weights `meta`, and a Hugging Face model card. Pure functions of the published STAC item: no torch, no I/O.

The channel count is the weights' (conv1's input channels), checked against the item's bands, so a
12-band backbone comes out with in_chans 12 and each band's stretch, mean and std.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import yaml

from secoctl.errors import UserError
from secoctl.model_card import FEATURES

SECO_PAPER = {
    "paper_ids": "arXiv:2103.16607",
    "paper_name": "Seasonal Contrast: Unsupervised Pre-Training from Uncurated Remote Sensing Data",
    "origin_url": "https://github.com/ServiceNow/seasonal-contrast",
}
# The registry's ResNet cfg that an overlay starts from names ImageNet weights; these fields must not survive.
# first_conv goes too: timm before 1.0.31 adapts the named stem whenever in_chans != 3 and, for a source stem
# that is not 3-channel, replaces it with a random init; with no first_conv every timm loads conv1 unchanged.
REGISTRY_FIELDS_CLEARED = (
    "url",
    "hf_hub_id",
    "tag",
    "license",
    "test_input_size",
    "test_crop_pct",
    "pool_size",
    "first_conv",
)
STEPS = (
    "reflectance × 10000 → (x − low) / (high − low) per band, clipped to [0, 1] → rounded to 1/255 → "
    "resized to size × size (bilinear, antialiased), clipped to [0, 1] → (x − mean) / std per band"
)


def input_spec(item: dict[str, Any], in_chans: int) -> dict[str, Any]:
    """The item's `secoctl:input`, once its bands agree with the weights' input channels."""
    spec = item["properties"]["secoctl:input"]
    if len(spec["bands"]) != in_chans:
        raise UserError(
            f"{item['id']}: conv1 takes {in_chans} channels but item.json's secoctl:input lists "
            f"{len(spec['bands'])} bands; ask the publisher to publish the version again"
        )
    return spec


def description(item: dict[str, Any], spec: dict[str, Any]) -> str:
    stretches = ", ".join(f"{band} {spec['stretch'][band][0]:g}-{spec['stretch'][band][1]:g}" for band in spec["bands"])
    return (
        f"{item['properties']['secoctl:backbone']} backbone pre-trained on Sentinel-2 L2A "
        f"({', '.join(spec['bands'])}). Input: {STEPS}; stretch (low-high): {stretches}."
    )


def pretrained_cfg(item: dict[str, Any], in_chans: int) -> dict[str, Any]:
    """timm PretrainedCfg fields (only those: timm refuses others) for a feature backbone (num_classes 0)."""
    spec = input_spec(item, in_chans)
    size = spec["size"] or 224  # an item for any input size still needs timm's default data config
    return {
        **dict.fromkeys(REGISTRY_FIELDS_CLEARED),
        **SECO_PAPER,
        "architecture": item["properties"]["secoctl:backbone"],
        "input_size": [in_chans, size, size],
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": list(spec["mean"]),
        "std": list(spec["std"]),
        "num_classes": 0,
        "classifier": "fc",
        "description": description(item, spec),
        "notes": [f"bands: {', '.join(spec['bands'])}", f"published as {item['id']}"],
    }


def torchgeo_band(band: str) -> str:
    """torchgeo's band names drop the leading zero: B04 → B4, B8A stays."""
    return re.sub(r"^B0(\d)$", r"B\1", band)


def torchgeo_meta(item: dict[str, Any], in_chans: int) -> dict[str, Any]:
    """The keys torchgeo's WeightsEnum entries carry in `meta` (dataset, in_chans, model, publication, repo,
    ssl_method, bands), filled from the item's provenance."""
    spec = input_spec(item, in_chans)
    provenance = item["properties"]["secoctl:provenance"]
    return {
        "dataset": dataset(provenance),
        "in_chans": in_chans,
        "model": item["properties"]["secoctl:backbone"],
        "publication": "https://arxiv.org/abs/2103.16607",
        "repo": SECO_PAPER["origin_url"],
        "ssl_method": provenance.get("method") or ("seco" if "release" in provenance else None),
        "bands": [torchgeo_band(band) for band in spec["bands"]],
        "secoctl_item": item["id"],
    }


def dataset(provenance: dict[str, Any]) -> str | None:
    if "release" in provenance:
        return f"SeCo Dataset ({provenance['pretraining']})"
    if "experiment" in provenance:
        collect = (provenance.get("spec") or {}).get("spec", {}).get("collect", {})
        where = ", ".join(
            str(part)
            for part in (collect.get("source"), collect.get("locations") and f"{collect['locations']} locations")
            if part
        )
        return f"secoctl experiment {provenance['experiment']}" + (f" ({where})" if where else "")
    return None


def torchgeo_transforms(item: dict[str, Any], in_chans: int) -> dict[str, Any]:
    """The input transform's parameters, as `secoctl.weights.input_transform` applies them (`steps`)."""
    spec = input_spec(item, in_chans)
    return {
        "steps": STEPS,
        **{key: spec[key] for key in ("bands", "reflectance_scale", "stretch", "mean", "std", "size")},
    }


def hub_config_extra(item: dict[str, Any], in_chans: int) -> dict[str, Any]:
    """Keys beside timm's own in the hub config.json: timm ignores them, a reader finds the input there."""
    return {"secoctl:input": input_spec(item, in_chans), "secoctl:item": item["id"]}


# The Hub reads these from the card's YAML front matter; written by yaml.safe_dump, so no value can end it.
CARD_METADATA = {
    "library_name": "timm",
    "pipeline_tag": "image-feature-extraction",
    "tags": ["image-feature-extraction", "timm", "remote-sensing", "sentinel-2", "self-supervised", "seco"],
}
# Spec fields that name where the publisher keeps its files (a local path, a bucket, a claim, a Secret).
STORAGE_FIELDS = ("storage", "storageSecret", "storageClaim")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Inline marks only: values never start a line (line breaks are removed), so list and heading marks are inert.
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md(value: Any) -> str:
    """`value` as inert Markdown text on one line: control characters and line breaks become one space, HTML
    is entity-escaped and every inline Markdown mark (table pipes included) is backslash-escaped."""
    one_line = CONTROL.sub(" ", str(value)).strip()
    return MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


def card_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The training spec as the card shows it: without the storage fields, which are the publisher's own."""
    inner = {key: value for key, value in (spec.get("spec") or {}).items() if key not in STORAGE_FIELDS}
    return {**spec, "spec": inner} if "spec" in spec else spec


def model_card(item: dict[str, Any], in_chans: int, metric_rows: list[Any]) -> str:
    """README.md for the hub folder: front matter for the Hub, then bands, normalisation, training, metrics and
    provenance from the STAC item. Every value from the item is escaped (`md`); the spec is JSON in a fence."""
    properties = item["properties"]
    spec = input_spec(item, in_chans)
    backbone = properties["secoctl:backbone"]
    provenance = properties["secoctl:provenance"]
    bands = "\n".join(
        f"| {md(band)} | {spec['stretch'][band][0]:g} | {spec['stretch'][band][1]:g} | {mean:g} | {std:g} |"
        for band, mean, std in zip(spec["bands"], spec["mean"], spec["std"])
    )
    metrics = (
        "\n".join(
            f"| {md(row.evaluation)} | {md(row.metric)} | {md(row.model)} | {row.value:.4f} |" for row in metric_rows
        )
        or "| none recorded | | | |"
    )
    # json.dumps escapes every control character, so no line of the fenced block can close the fence.
    spec_text = json.dumps(card_spec(provenance["spec"]), indent=1) if provenance.get("spec") else None
    training = {key: value for key, value in provenance.items() if key != "spec"}
    return "\n".join(
        [
            "---",
            yaml.safe_dump(CARD_METADATA, sort_keys=False, default_flow_style=None).rstrip("\n"),
            "---",
            "",
            f"# {md(properties.get('mlm:name', item['id']))} ({md(item['id'])})",
            "",
            f"{md(backbone)} backbone ({FEATURES[backbone]} pooled features, "
            f"{md(properties.get('mlm:total_parameters'))} parameters, {in_chans} input channels) pre-trained with "
            "Seasonal Contrast ([Mañas et al., ICCV 2021](https://arxiv.org/abs/2103.16607)). Exported by "
            "`secoctl weights export` from the weights' STAC item (MLM extension).",
            "",
            "```python",
            "import timm",
            'model = timm.create_model("local-dir:/path/to/this/folder", pretrained=True)',
            "```",
            "",
            "## Input",
            "",
            f"Sentinel-2 L2A surface reflectance × {md(spec['reflectance_scale'])}, channels in this "
            f"order: {md(', '.join(spec['bands']))}. Each pixel: {STEPS} (size {md(spec['size'])}).",
            "",
            "| band | stretch low | stretch high | mean | std |",
            "|---|---|---|---|---|",
            bands,
            "",
            "## Training",
            "",
            *(f"- {md(key)}: {md(value)}" for key, value in training.items()),
            "",
            *(["Training spec:", "", "```json", spec_text, "```", ""] if spec_text else []),
            "## Metrics",
            "",
            "| evaluation | metric | model | value |",
            "|---|---|---|---|",
            metrics,
            "",
            "## Provenance",
            "",
            f"- STAC item: {md(item['id'])}, datetime {md(properties.get('datetime'))}",
            f"- pretrained source: {md(properties.get('mlm:pretrained_source'))}",
            f"- framework: {md(properties.get('mlm:framework'))}; weights: model.safetensors (timm/torchvision ResNet "
            "names)",
            "",
        ]
    )
