"""The reference's released SeCo checkpoints, by the MD5 sums its README lists (Zenodo record 4728033).

`secoctl weights import --format seco-ckpt` names a file by its sum and refuses any other, so a
truncated download or another checkpoint is never published as a release.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from secoctl.errors import UserError


@dataclass(frozen=True)
class Release:
    name: str  # the file name on Zenodo, without .ckpt
    backbone: str
    pretraining: str  # the pre-training set: seco-100k or seco-1m


# ServiceNow/seasonal-contrast README.md, "Pre-trained Models" table.
RELEASES = {
    "dcf336be31f6c6b0e77dcb6cc958fca8": Release("seco_resnet18_100k", "resnet18", "seco-100k"),
    "53d5c41d0f479bdfd31d6746ad4126db": Release("seco_resnet18_1m", "resnet18", "seco-1m"),
    "9672c303f6334ef816494c13b9d05753": Release("seco_resnet50_100k", "resnet50", "seco-100k"),
    "7b09c54aed33c0c988b425c54f4ef948": Release("seco_resnet50_1m", "resnet50", "seco-1m"),
}
CHUNK = 1 << 20


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def identify(path: Path, releases: dict[str, Release] = RELEASES) -> tuple[Release, str]:
    """(the release `path` is, its md5); a file of any other sum is refused in one line."""
    md5 = md5_of(path)
    release = releases.get(md5)
    if release is None:
        known = ", ".join(r.name for r in releases.values())
        raise UserError(
            f"{path.name} (md5 {md5}) is not a SeCo release checkpoint ({known}): a corrupted or "
            "partial download, or another file; fetch it again from zenodo.org/record/4728033"
        )
    return release, md5
