"""`python -m jobs.localcloud.cluster up [--nodes kwok|real]`: build the binaries if need be, start a local cluster,
stop on Ctrl-C.

`--nodes kwok` (the default): kwok's simulated GPU and CPU nodes, where no container runs.
`--nodes real`: one real node instead (jobs/localcloud/cluster/realnode: kubelet, containerd, CNI bridge,
kube-proxy, CoreDNS) with the pod image built and loaded; needs root and Debian's containerd, runc,
iptables and containernetworking-plugins.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from jobs.localcloud.cluster import binaries, controlplane, kueue
from jobs.localcloud.cluster.realnode import binaries as node_binaries
from jobs.localcloud.cluster.realnode import node as realnode


def build() -> int:
    """Every binary the cluster tests run, each in its own cache (a Kueue upgrade rebuilds only Kueue)."""

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        binaries.ensure(log)
        kueue.ensure(log)
        if os.geteuid() == 0:
            node_binaries.ensure(log)
        else:
            log("node binaries: not built: the real-node test (tests/cluster/test_real_node.py) runs as root only")
    except binaries.BuildFailed as error:
        print(f"cluster binaries: build failed: {error}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.localcloud.cluster")
    parser.add_argument("command", choices=["up", "build"])
    parser.add_argument("--nodes", choices=["kwok", "real"], default="kwok")
    args = parser.parse_args()
    if args.command == "build":
        raise SystemExit(build())
    if args.nodes == "real" and realnode.unavailable():
        raise SystemExit(f"real node: {realnode.unavailable()}")
    binaries.ensure()
    if args.nodes == "real":
        node_binaries.ensure()
        try:
            with realnode.cluster(Path(tempfile.mkdtemp(prefix="secoctl-realnode-"))) as real:
                print(
                    f"cluster up: {', '.join(f'{k} {v:.1f} s' for k, v in real.timings.items())}; image "
                    f"{real.image} (a spec runs it with imagePullPolicy: IfNotPresent); API server, DNS and pods "
                    f"on {realnode.ADDRESS}"
                )
                wait(real.plane)
        except realnode.NodeFailed as error:
            raise SystemExit(f"real node: {error}") from None
        return
    started = time.monotonic()
    plane = controlplane.started()
    print(
        f"control plane up in {time.monotonic() - started:.1f} s (Kubernetes {binaries.KUBERNETES}, "
        f"etcd {binaries.ETCD}, kwok {binaries.KWOK})"
    )
    try:
        wait(plane)
    finally:
        plane.stop()


def wait(plane) -> None:
    print(f"export KUBECONFIG={plane.admin_kubeconfig}   # logs in {plane.workdir}; Ctrl-C stops it")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
