"""The fault proxy in front of the test S3 server, as the storage every S3 client of this process and its
children uses meanwhile (the AWS_ENDPOINT_URL variables point at it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from jobs.localcloud.servers import S3Endpoint, fault_proxy, fault_report


@contextlib.contextmanager
def s3_behind_faults(endpoint: S3Endpoint, rules: list[dict[str, Any]]) -> Iterator[str]:
    """The proxy's URL; on the way out, every rule has fired as often as it was told to (a rule that
    fired less tested nothing)."""
    import s3fs

    with fault_proxy(endpoint.url, rules=rules) as proxy:
        previous = {key: os.environ[key] for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")}
        os.environ.update(AWS_ENDPOINT_URL=proxy, AWS_ENDPOINT_URL_S3=proxy)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield proxy
            fired = fault_report(proxy)["rules"]
        finally:
            os.environ.update(previous)
            s3fs.S3FileSystem.clear_instance_cache()
    assert [rule["fired"] for rule in fired] == [rule.get("times", 1) for rule in rules], fired


def write_faults(path: str) -> list[dict[str, Any]]:
    """Every kind of fault, in bursts, on the writes (PUT, a multipart upload's parts included) of
    objects whose path matches `path`: 6 failed tries and a stall in all, so even one object that
    takes them all gets through within the data plane's 8 tries."""
    return [
        {"path": path, "method": "PUT", "action": "status", "status": 503, "times": 2},
        {"path": path, "method": "PUT", "action": "reset", "times": 2},
        {"path": path, "method": "PUT", "action": "status", "status": 500, "times": 2},
        {"path": path, "method": "PUT", "action": "stall", "seconds": 2, "times": 1},
    ]
