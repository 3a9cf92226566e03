"""The paper's downstream datasets through torchgeo's classes, as reflectance of the bands asked for (RGB for
recipes paper and modern, every band for multispectral), with errors that name the file.

Every reader goes through `Readable`, which turns a failed read into a message naming the file and
how to fetch the data again; the loader raises it in the main process as one `DatasetError`, so a
corrupt file stops the evaluation instead of shrinking it silently.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from secoctl.model_card import RGB_BANDS

# Each dataset's Sentinel-2 bands in the order torchgeo 0.8.1 returns them: EuroSAT.all_band_names (the
# release's 13 L1C bands, B8A last), BigEarthNet's 12 L2A "s2" bands, OSCD.all_bands (13 L1C bands).
DATASET_BANDS = {
    "eurosat": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A"),
    "bigearthnet": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
    "oscd": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"),
}
HOW_TO_FETCH = {
    "eurosat": "torchgeo.datasets.EuroSAT(root, download=True)",
    "bigearthnet": "torchgeo.datasets.BigEarthNet(root, bands='s2', download=True)",
    "oscd": "torchgeo.datasets.OSCD(root, download=True)",
}


class DatasetError(RuntimeError):
    """A missing or unreadable dataset file; the message names it and how to fetch the data."""


def dataset_root(task: str, data_path: str | None, cache: Path) -> tuple[str, bool]:
    """(root, may download): a given dataPath is used as is; otherwise a cache that torchgeo fills."""
    if data_path:
        return data_path.removeprefix("file://"), False
    return str(cache / task), True


def band_indices(task: str, bands: list[str] | tuple[str, ...]) -> list[int]:
    """Where each of a model's bands sits in `task`'s images, matched by name. Weights trained on the 12 L2A
    bands have no B10 (cirrus, L1C only), so EuroSAT's and OSCD's B10 is left out of their input: SSL4EO-S12
    reads EuroSAT so for its 12-band L2A models (zhu-xlab/SSL4EO-S12@2156913c, src/benchmark/
    transfer_classification/datasets/EuroSat/eurosat_dataset.py, S2A_BANDS on line 13 and
    f.read((1, ..., 9, 11, 12, 13)) on line 97). Every L2A band is in all three datasets."""
    return [DATASET_BANDS[task].index(band) for band in bands]


def with_bands(indices: list[int], sample: dict[str, Any]) -> dict[str, Any]:
    """A torchgeo sample with only the image channels at `indices`, in that order."""
    return {**sample, "image": sample["image"][indices]}


def open_split(
    task: str, root: str, split: str, download: bool, bands: list[str] | tuple[str, ...] = RGB_BANDS
) -> Dataset:
    from torchgeo.datasets import OSCD, BigEarthNet, DatasetNotFoundError, EuroSAT

    try:
        if task == "eurosat":
            return EuroSAT(root, split=split, bands=bands, download=download)
        if task == "bigearthnet":
            return BigEarthNet(
                root,
                split=split,
                bands="s2",
                num_classes=19,
                download=download,
                transforms=partial(with_bands, band_indices(task, bands)),
            )
        return OSCD(root, split=split, bands=bands, download=download)
    except DatasetNotFoundError as error:
        raise DatasetError(
            f"{task} is not in {root}: {error} Set evaluate[].dataPath to an extracted copy, "
            f"or fetch it with {HOW_TO_FETCH[task]} on a machine that can reach its host"
        ) from None


def describe(dataset: Any, index: int) -> str:
    """The file (or folder) behind sample `index`, for error messages."""
    if hasattr(dataset, "samples"):
        return str(dataset.samples[index][0])
    if hasattr(dataset, "folders"):
        return str(dataset.folders[index]["s2"])
    if hasattr(dataset, "files"):
        return str(dataset.files[index]["region"])
    return f"sample {index}"


class Readable(Dataset):
    """Reflectance and target of `task`; a failed read becomes {"error": message}."""

    def __init__(self, task: str, dataset: Dataset):
        self.task, self.dataset = task, dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            sample = self.dataset[index]
        except Exception as error:  # noqa: BLE001 - name the file whatever the reader raised
            return {
                "error": f"cannot read {describe(self.dataset, index)}: {error}. Re-extract the dataset, or "
                f"delete it and fetch it again with {HOW_TO_FETCH[self.task]}"
            }
        if self.task == "oscd":
            return {"image": sample["image"], "target": sample["mask"][0]}
        return {"image": sample["image"], "target": sample["label"]}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [s["error"] for s in samples if "error" in s]
    if errors:
        return {"error": errors[0]}
    return {"image": torch.stack([s["image"] for s in samples]), "target": torch.stack([s["target"] for s in samples])}


def batches(task: str, dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0):
    """Batches of {"image", "target"}; raises DatasetError at the first unreadable file."""
    workers = min(4, max((torch.get_num_threads() or 1) // 2, 0)) if len(dataset) > 4 * batch_size else 0
    loader = DataLoader(
        Readable(task, dataset),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
    for batch in loader:
        if "error" in batch:
            raise DatasetError(batch["error"])
        yield batch


def scenes(task: str, dataset: Dataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every (image, target) in memory, one at a time: OSCD's 24 cities differ in size."""
    return [(batch["image"][0], batch["target"][0]) for batch in batches(task, dataset, 1)]


# The reference drops the patches BigEarthNet's authors list as covered by seasonal snow, or by
# clouds and their shadows (datasets/bigearthnet_dataset.py); the lists sit beside the data.
BAD_PATCH_LISTS = ("patches_with_seasonal_snow.csv", "patches_with_cloud_and_shadow.csv")


def without_snow_and_cloud(dataset: Dataset, root: str) -> Dataset:
    """torchgeo's BigEarthNet minus the listed patches, where the lists are in `root`; unchanged otherwise."""
    bad: set[str] = set()
    for name in BAD_PATCH_LISTS:
        listed = Path(root) / name
        if listed.exists():
            bad.update(line.split(",")[0].strip() for line in listed.read_text().splitlines() if line.strip())
    if bad:
        dataset.folders = [f for f in dataset.folders if Path(f["s2"]).name not in bad]
    return dataset
