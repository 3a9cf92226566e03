"""The local cloud on a non-loopback address of this machine, as pods behind a CNI bridge reach it.

Pods on a node cannot reach the host's 127.0.0.1, so the STAC API, the COG hrefs in its items and
every server behind them must listen on, and name, the address the spec's stacUrl gives.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from jobs.collect.signing import Signer
from jobs.localcloud.__main__ import main, serving_host
from jobs.localcloud.cloud import serve
from tests.collect.conftest import SPEC


def non_loopback_address() -> str | None:
    """The IPv4 address this machine sends from (a UDP connect sends nothing), unless it is loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.IPv4Address(address).is_loopback or address == "0.0.0.0" else address


@pytest.fixture
def host() -> str:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address with a route")
    return address


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as answer:
        return answer.status, dict(answer.headers), answer.read()


@pytest.mark.parametrize("kind", ["plain", "proxied-and-signed"])
def test_the_world_is_served_on_and_names_a_non_loopback_address(world_folder: Path, host: str, kind: str):
    options = {"latency_ms": 1.0, "signed": True} if kind == "proxied-and-signed" else {}
    with serve(world_folder, host=host, **options) as cloud:
        assert {urlsplit(url).hostname for url in (cloud.stac_url, cloud.cog_url, cloud.sas_url or cloud.cog_url)} == {
            host
        }
        status, _, body = _get(f"{cloud.stac_url}/search?limit=4")
        assert status == 200
        items = json.loads(body)["features"]
        assert items
        hrefs = [asset["href"] for item in items for asset in item["assets"].values()]
        assert {urlsplit(href).netloc for href in hrefs} == {urlsplit(cloud.cog_url).netloc}
        href = next(href for href in hrefs if href.endswith(".tif"))
        if cloud.sas_url:
            href = Signer(cloud.sas_url).sign(href)
        status, headers, head = _get(href, Range="bytes=0-15")
        assert (status, len(head), headers["Content-Range"].split("/")[0]) == (206, 16, "bytes 0-15")
        assert head[:4] in (b"II*\x00", b"II+\x00")  # a little-endian TIFF (or BigTIFF)


def test_only_an_address_of_this_machine_is_served_and_loopback_names_stay_127_0_0_1(host: str, tmp_path, capsys):
    assert serving_host("127.0.0.1") == serving_host("localhost") == "127.0.0.1"
    assert serving_host(host) == host
    # TEST-NET-3 (RFC 5737) is no machine's address; a name is not an address; 0.0.0.0 names no machine
    for refused in ("203.0.113.9", "stac.example", "0.0.0.0", None):
        assert serving_host(refused) is None
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        SPEC.format(source="stac", stac_url="http://203.0.113.9:8080/", per_shard=3, workers=1, in_flight=1)
    )
    with pytest.raises(SystemExit) as refused:
        main(["run", "--spec", str(spec), "--cache", str(tmp_path / "cache"), "--", "true"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert refused.value.code == 2
    assert "collect.stacUrl http://203.0.113.9:8080/ must be an address of this machine with a port" in error
    assert not (tmp_path / "cache").exists(), "nothing is built for a refused spec"
