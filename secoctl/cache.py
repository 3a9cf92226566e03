"""secoctl's folder on this machine for what is made or downloaded once and reused: pulled weights,
made worlds, evaluation datasets, built images and binaries, locks."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(*parts: str) -> Path:
    """`$XDG_CACHE_HOME/secoctl/...`, else `~/.cache/secoctl/...`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "secoctl", *parts)
