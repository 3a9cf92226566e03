"""Weights for the user's own bands: which stem column each band takes, and the item that describes the result.

A band is named as Sentinel-2 names it (`B8A`, `B01`), with a leading zero or not (`B1`), in any case (`B8a`), by
its STAC common name (`nir08`, `rededge2`), or as a Landsat 8/9 OLI Collection 2 band (`SR_B5`). Each takes:
- the column of the trained band of that name;
- else the column of the trained band nearest in centre wavelength, when within `WAVELENGTH_TOLERANCE`;
- else a zero column ("new"): the band is read but changes nothing until fine-tuned.
A trained band the user lacks is dropped: with per-band z-scoring that is the same as feeding it at its mean,
which normalises to 0 and so multiplies its column by nothing. Nothing is matched by position. No torch here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from secoctl.errors import UserError
from secoctl.model_card import BAND_TABLE, model_item

# µm between a band and the trained band whose column it may take: covers the Landsat OLI and Sentinel-2 centres
# of one spectral band (at most 0.015 apart) and one red-edge step (0.036-0.043), not the 0.059 from B07 to B08.
WAVELENGTH_TOLERANCE = 0.05
# STAC common names; the red edge has three bands, so each has stactools' numbered asset name.
COMMON_NAMES = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
}
NEW_STRETCH = [0.0, 10_000.0]  # a zero column's band: reflectance 0-1, any finite stretch gives the same output
NEW_RULE = "none: a zero stem column reads this band, so its values do not change the output"


@dataclass(frozen=True)
class Source:
    """Where band `band` (canonical name) gets its stem column: `column` of the trained band `trained`, or none."""

    band: str
    column: int | None
    trained: str | None

    def describe(self) -> str:
        if self.column is None:
            return f"{self.band} <- new (zero column)"
        how = (
            ""
            if self.trained == self.band
            else f", nearest by wavelength ({abs(BAND_TABLE[self.band][1] - BAND_TABLE[self.trained][1]):.3f} µm)"
        )
        return f"{self.band} <- column {self.column} ({self.trained}{how})"


def known_names() -> str:
    return (
        f"{', '.join(BAND_TABLE)}; aliases: B1-B9 for B01-B09, any case (B8a), common names {', '.join(COMMON_NAMES)}"
    )


def canonical(name: str) -> str:
    """The band table's name for `name`; one line naming every known band and alias otherwise."""
    text = name.strip()
    upper = text.upper()
    if upper in BAND_TABLE:
        return upper
    digit = re.fullmatch(r"B(\d)", upper)
    if digit:
        return f"B0{digit[1]}"
    if text.lower() in COMMON_NAMES:
        return COMMON_NAMES[text.lower()]
    raise UserError(f"band {name[:40]!r} is not known; known bands: {known_names()}")


def sources(trained: list[str], wanted: list[str] | tuple[str, ...]) -> list[Source]:
    """Each wanted band's stem column among the `trained` bands (the weights' channel order)."""
    if isinstance(wanted, str) or not all(isinstance(name, str) for name in wanted):
        raise UserError(f"bands={wanted!r:.80}: give a list of band names, e.g. bands=['B02', 'B03', 'B04', 'B08']")
    bands = [canonical(name) for name in wanted]
    if not bands:
        raise UserError("bands=[] names no band; give the bands of your input, in its channel order")
    repeated = sorted({band for band in bands if bands.count(band) > 1})
    if repeated:
        raise UserError(
            f"bands {list(wanted)} name {', '.join(repeated)} more than once (through an alias); give each band once"
        )
    found = []
    for band in bands:
        if band in trained:
            found.append(Source(band, trained.index(band), band))
            continue
        wavelength = BAND_TABLE[band][1]
        nearest = min(trained, key=lambda other: abs(BAND_TABLE[other][1] - wavelength))
        within = abs(BAND_TABLE[nearest][1] - wavelength) <= WAVELENGTH_TOLERANCE
        found.append(Source(band, trained.index(nearest), nearest) if within else Source(band, None, None))
    return found


def adapted_input(described: dict[str, Any], found: list[Source]) -> dict[str, Any]:
    """The secoctl:input for the wanted bands: each band's stretch, mean and std taken by name from the band whose
    column it reads (a new band's from nothing: its column is zero)."""
    index = {band: i for i, band in enumerate(described["bands"])}
    return {
        "bands": [s.band for s in found],
        "reflectance_scale": described["reflectance_scale"],
        "stretch": {s.band: list(described["stretch"][s.trained]) if s.trained else NEW_STRETCH for s in found},
        "stretch_rule": {
            s.band: described.get("stretch_rule", {}).get(s.trained, "") if s.trained else NEW_RULE for s in found
        },
        "mean": [described["mean"][index[s.trained]] if s.trained else 0.0 for s in found],
        "std": [described["std"][index[s.trained]] if s.trained else 1.0 for s in found],
        "size": described["size"],
    }


def adapted_item(item: dict[str, Any], found: list[Source], parameters: int) -> dict[str, Any]:
    """A new item for the weights adapted to `found`'s bands (`parameters` in all), naming the version and the
    columns they came from; the original's metrics were measured over other bands and are not carried."""
    properties = item["properties"]
    described = adapted_input(properties["secoctl:input"], found)
    version = properties["secoctl:version"]
    name = item["id"][: -len(version) - 1]
    suffix = "-".join(s.band.lower().replace("_", "") for s in found)
    provenance = {
        **properties["secoctl:provenance"],
        "adapted_from": item["id"],
        "columns": [s.describe() for s in found],
    }
    return model_item(
        f"{name}-{suffix}"[:64].rstrip("-._"),
        version,
        properties["secoctl:backbone"],
        described["size"] or 224,
        parameters,
        provenance,
        described=described,
    )
