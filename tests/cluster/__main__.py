"""`python -m tests.cluster up`: build the binaries if need be, start the test control plane, stop on Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import time

from tests.cluster import binaries, controlplane


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster")
    parser.add_argument("command", choices=["up", "build"])
    args = parser.parse_args()
    if args.command == "build":
        raise SystemExit(binaries.main())
    binaries.ensure()
    started = time.monotonic()
    plane = controlplane.started()
    print(f"control plane up in {time.monotonic() - started:.1f} s (Kubernetes {binaries.KUBERNETES}, "
          f"etcd {binaries.ETCD}, kwok {binaries.KWOK})")
    print(f"export KUBECONFIG={plane.admin_kubeconfig}   # logs in {plane.workdir}; Ctrl-C stops it")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
