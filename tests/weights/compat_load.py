"""Load one export as its README says and print conv1's max |difference| from the weights it was made from.

Run in a subprocess whose PYTHONPATH puts another timm or torchgeo first: `python compat_load.py FORMAT FOLDER
REFERENCE.safetensors`. Prints `<package> <version> <max |diff|>`; exits non-zero when the export does not load.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def loaded(fmt: str, folder: Path) -> tuple[str, torch.nn.Module]:
    if fmt == "torchgeo":
        import torchgeo
        import torchgeo.models

        meta = json.loads((folder / "meta.json").read_text())["meta"]
        model = getattr(torchgeo.models, meta["model"])(weights=None, in_chans=meta["in_chans"], num_classes=0)
        model.load_state_dict(torch.load(folder / "model.pth", weights_only=True), strict=True)
        return f"torchgeo {torchgeo.__version__}", model
    import timm

    if fmt == "timm":
        cfg = json.loads((folder / "pretrained_cfg.json").read_text())
        model = timm.create_model(cfg["architecture"], pretrained=True, pretrained_cfg_overlay=cfg)
    else:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    return f"timm {timm.__version__}", model


def main() -> None:
    fmt, folder, reference = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    package, model = loaded(fmt, folder)
    expected = load_file(reference)["conv1.weight"]
    difference = (model.conv1.weight.detach() - expected).abs().max().item()
    print(package, difference)


if __name__ == "__main__":
    main()
