"""The synthetic world served by real servers: what the quickstart, tests and benchmarks collect from."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.localcloud import landscape, servers, world
from secoctl.spec import Collect


@dataclass(frozen=True)
class LocalCloud:
    stac_url: str  # what clients use (the proxy when there is one)
    cog_url: str
    stac_proxy: str | None
    cog_proxy: str | None
    sas_url: str | None = None  # the token service, when reads need SAS tokens (PC_SDK_SAS_URL)


def world_key(collect: Collect, missing_every: int, corrupt: frozenset[int], bands: tuple[str, ...] | None) -> str:
    facts = {
        "collect": collect.model_dump(mode="json", exclude={"source", "stac_url", "workers", "in_flight", "resources"}),
        "missing_every": missing_every,
        "corrupt": sorted(corrupt),
        "bands": bands,
        "landscape": landscape.VERSION,
        "world": world.VERSION,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def built_world(
    collect: Collect,
    cache: Path,
    missing_every: int = 7,
    corrupt: frozenset[int] = frozenset(),
    bands: tuple[str, ...] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> Path:
    """The world's folder under `cache`, built once per distinct collect section."""
    folder = cache / world_key(collect, missing_every, corrupt, bands)
    if not (folder / "complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        world.build(collect, folder, missing_every, corrupt, bands, log=log)
        (folder / "complete").touch()
    return folder


@contextlib.contextmanager
def serve(
    folder: Path,
    stac_port: int | None = None,
    latency_ms: float = 0.0,
    stac_faults: list[dict[str, Any]] | None = None,
    cog_faults: list[dict[str, Any]] | None = None,
    signed: bool = False,
    token_lifetime_s: float = 2700.0,
    token_stated_lifetime_s: float | None = None,
    host: str = "127.0.0.1",
) -> Iterator[LocalCloud]:
    """The world's STAC API and COGs; `signed` puts the COGs behind SAS tokens from a local token service.

    Every server listens on `host`, and the items' COG hrefs name it: pods that reach this machine
    only at a non-loopback address (a CNI bridge) are given that address.
    """
    proxied = bool(latency_ms or stac_faults or cog_faults)
    with contextlib.ExitStack() as stack:
        sas_key = secrets.token_hex(16) if signed else None
        sas_url = (
            stack.enter_context(servers.token_server(sas_key, token_lifetime_s, token_stated_lifetime_s, host=host))
            if sas_key
            else None
        )
        cogs = stack.enter_context(servers.cog_server(folder / "cogs", sas_key=sas_key, host=host))
        cog_front = (
            stack.enter_context(servers.fault_proxy(cogs, latency_ms, cog_faults, host=host)) if proxied else cogs
        )
        served = folder / f"served-{servers.free_port()}"
        served.mkdir()
        stack.callback(shutil.rmtree, served, True)
        shutil.copy(folder / "stac" / "collection.json", served / "collection.json")
        items = (folder / "stac" / "items.json").read_text().replace(world.HREF_BASE, cog_front)
        (served / "items.json").write_text(items)
        if proxied:
            api_port = servers.free_port(host)
            stac_front = stack.enter_context(
                servers.fault_proxy(f"http://{host}:{api_port}", latency_ms, stac_faults, port=stac_port, host=host)
            )
            stack.enter_context(servers.stac_server(served, api_port, public_url=stac_front, host=host))
        else:
            stac_front = stack.enter_context(servers.stac_server(served, stac_port, host=host))
        yield LocalCloud(
            stac_front, cog_front, stac_front if proxied else None, cog_front if proxied else None, sas_url
        )
