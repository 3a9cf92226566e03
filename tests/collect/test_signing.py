"""Signing against a real token service on 127.0.0.1 that answers, is down, hangs, or hands out tokens that run out."""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.collect.signing import Signer, TokenServiceUnreachable, redact, storage_container
from jobs.common.shards import read_shard, shard_entries
from jobs.localcloud.cloud import serve
from jobs.localcloud.servers import free_port, token_server, tokens_issued
from secoctl import store
from secoctl.backends.local.executor import StageFailed
from secoctl.partlog import PREDICTABLE_EXIT
from tests.collect.conftest import expected_outcomes, experiment_for, run_collect

HREF = "/sentinel2l2a01/sentinel2-l2/S2B_MSIL2A_20220601T100000/B04.tif"


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections and never answers (the kernel completes the handshake)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api/sas/v1/token"


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=0-15"}), timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        return refused.code


def test_storage_takes_a_fresh_token_and_refuses_none_forged_or_expired(world_folder: Path):
    items = json.loads((world_folder / "stac" / "items.json").read_text())["features"]
    path = items[0]["assets"]["B04"]["href"].split("}", 1)[1]  # after the COG server's placeholder
    with serve(world_folder, signed=True, token_lifetime_s=0) as expired, serve(world_folder, signed=True) as cloud:
        href = cloud.cog_url + path
        fresh = Signer(cloud.sas_url).sign(href)
        assert status_of(fresh) == 206
        assert status_of(href) == 403
        assert status_of(fresh.replace("sig=", "sig=A")) == 403
        assert status_of(Signer(expired.sas_url).sign(expired.cog_url + path)) == 403
        assert tokens_issued(cloud.sas_url) == 1


def test_tokens_are_cached_per_container_and_kept_out_of_error_text():
    with token_server("key") as sas_url:
        signer = Signer(sas_url)
        first = signer.sign("http://127.0.0.1:1" + HREF)
        assert signer.sign("https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/x/B02.tif").endswith(
            first.split("?", 1)[1]
        )
        signer.sign("http://127.0.0.1:1/landsateuwest/landsat-c2/x/B02.tif")
        assert tokens_issued(sas_url) == 2
    assert storage_container("https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/a/b.tif") == (
        "sentinel2l2a01",
        "sentinel2-l2",
    )
    assert redact(f"Error opening '{first}': 403") == f"Error opening 'http://127.0.0.1:1{HREF}?<SAS token>': 403"


@pytest.mark.parametrize("endpoint", ["down", "silent"])
def test_an_unreachable_token_service_is_one_line_that_says_what_to_fix(endpoint: str):
    with contextlib.ExitStack() as stack:
        sas_url = (
            f"http://127.0.0.1:{free_port()}/api/sas/v1/token"
            if endpoint == "down"
            else stack.enter_context(silent_endpoint())
        )
        signer = Signer(sas_url)
        with pytest.raises(TokenServiceUnreachable) as first:
            signer.sign("http://127.0.0.1:1" + HREF)
        with pytest.raises(TokenServiceUnreachable) as again:  # every later location fails at once
            signer.sign("http://127.0.0.1:1" + HREF)
    message = str(first.value)
    assert again.value is first.value
    assert "\n" not in message and "PC_SDK_SAS_URL" in message and sas_url in message


def test_a_part_whose_token_service_is_down_fails_with_that_line(world_folder: Path, storage: Path, monkeypatch):
    sas_url = f"http://127.0.0.1:{free_port()}/api/sas/v1/token"
    monkeypatch.setenv("PC_SDK_SAS_URL", sas_url)
    with serve(world_folder, signed=True) as cloud:
        with pytest.raises(StageFailed) as failed:
            run_collect(experiment_for(cloud.stac_url, workers=1, source="planetary-computer"), storage)
    message = failed.value.message
    assert message.startswith(f"collect part 0: no SAS token from {sas_url}/sentinel2l2a01/sentinel2-l2")
    assert "PC_SDK_SAS_URL" in message and "\n" not in message
    assert failed.value.exit_code == PREDICTABLE_EXIT
    assert "Traceback" in store.read_text(failed.value.log_location)  # the story, for `secoctl logs`


def test_tokens_that_expire_mid_run_are_renewed_and_no_location_fails_for_it(
    world_folder: Path, storage: Path, monkeypatch
):
    # storage stops honouring each token after 2 s though the service states 45 minutes: only a
    # re-sign on 403 gets past it, and it must not cost a location
    with serve(world_folder, latency_ms=50, signed=True, token_lifetime_s=2, token_stated_lifetime_s=2700) as cloud:
        monkeypatch.setenv("PC_SDK_SAS_URL", cloud.sas_url)
        experiment = experiment_for(cloud.stac_url, workers=1, in_flight=2, source="planetary-computer")
        index = run_collect(experiment, storage)
        issued = tokens_issued(cloud.sas_url)
    expected = expected_outcomes(experiment.spec.collect)
    keys = [sample.key for entry in shard_entries(index) for sample in read_shard(entry["uri"])]
    assert sorted(int(k) for k in keys) == sorted(expected["accepted"])
    failures = [f for part in index["parts"] for f in part["summary"]["failures"]]
    assert [f["location"] for f in failures] == sorted(expected["failed"])
    assert "sig=" not in json.dumps(failures)
    assert issued > 1
