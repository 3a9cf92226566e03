"""`python -m jobs.localcloud run --spec FILE -- COMMAND...`: serve the spec's synthetic world, run COMMAND.

The STAC API listens where the spec's `collect.stacUrl` points, the COGs on a free port of the same
host; both stop when COMMAND ends, and its exit status is returned. The host is 127.0.0.1 (or
localhost) for commands on this machine, or an IPv4 address of this machine that pods reach (a
node's CNI bridge, such as 10.88.0.1): the items' COG hrefs name it too. A synthetic EuroSAT-layout set
is made beside the worlds, and COMMAND gets SECOCTL_DATASETS pointing at it.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from jobs.localcloud import eurosat, landscape
from jobs.localcloud.cloud import built_world, serve
from secoctl.cache import cache_root
from secoctl.spec.file import read_experiment

DEFAULT_CACHE = cache_root("worlds")
# Images per class: 10 labels per class, where pre-training shows against random init (benchmarks.learning),
# and 100 test images per class, so one standard error of the accuracy is about 1.5 points, not 3.
EUROSAT_PER_CLASS = {"train": 10, "val": 10, "test": 100}


def serving_host(hostname: str | None) -> str | None:
    """The address to serve a stacUrl's host on: 127.0.0.1 for loopback names, else an IPv4 address this
    machine can bind; None when it is neither (a name, or another machine's address)."""
    if hostname in ("127.0.0.1", "localhost"):
        return "127.0.0.1"
    try:
        address = ipaddress.IPv4Address(hostname or "")
        with socket.socket() as probe:
            probe.bind((str(address), 0))
    except (ValueError, OSError):
        return None
    return None if address.is_unspecified else str(address)  # 0.0.0.0 binds, but no href can name it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.localcloud")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve the spec's synthetic world while COMMAND runs")
    run.add_argument("--spec", required=True)
    run.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    run.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    collect = read_experiment(args.spec).spec.collect
    endpoint = urlparse(collect.stac_url)
    host = serving_host(endpoint.hostname)
    if host is None or not endpoint.port:
        parser.error(
            f"collect.stacUrl {collect.stac_url} must be an address of this machine with a port "
            "(127.0.0.1, or an IPv4 address of this machine that pods reach)"
        )
    started = time.monotonic()
    folder = built_world(collect, args.cache, log=lambda line: print(f"localcloud: {line}", flush=True))
    print(
        f"localcloud: synthetic Sentinel-2 scenes for {collect.locations} locations ready in "
        f"{time.monotonic() - started:.1f} s ({folder})",
        flush=True,
    )
    # keyed by the ground and the split sizes, and never mixed with real downloads
    sizes = "-".join(f"{split}{count}" for split, count in EUROSAT_PER_CLASS.items())
    datasets = args.cache.parent / f"made-datasets-v{landscape.VERSION}-eurosat-{sizes}"
    if not (datasets / "eurosat" / "eurosat-test.txt").exists():
        eurosat.make(datasets / "eurosat", EUROSAT_PER_CLASS)
    print(f"localcloud: a synthetic EuroSAT-layout set in {datasets / 'eurosat'}", flush=True)
    with serve(folder, stac_port=endpoint.port, host=host) as cloud:
        print(f"localcloud: STAC API {cloud.stac_url}, COGs {cloud.cog_url}", flush=True)
        environment = {**os.environ, "SECOCTL_DATASETS": str(datasets)}
        return run_to_its_end(command, environment) if command else 0


def run_to_its_end(command: list[str], environment: dict[str, str]) -> int:
    """COMMAND's exit code, the servers kept up until it has exited. Ctrl-C reaches COMMAND from the terminal
    (one process group), so it is left to COMMAND to stop, however long its checkpoint takes; SIGTERM is
    passed on. No traceback of ours: the command says what happened."""
    child = subprocess.Popen(command, env=environment)
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum)),
    }
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
