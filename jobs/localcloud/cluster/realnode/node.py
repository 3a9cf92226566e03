"""A real node beside the test control plane: kubelet, containerd with runc, a CNI bridge, kube-proxy, CoreDNS.

Everything the pods reach lives on the pods' own bridge, `cni-realpods`, 10.88.0.1/24, made before
anything starts: the API server (bound there, so the `kubernetes` Service's endpoint is that
address and kube-proxy's rules take a pod from 10.96.0.1:443 to it), CoreDNS (the kubelet's
`clusterDNS`), and whatever a test serves to its pods (the local cloud). The node's IP is the same
address: a kubelet refuses a loopback one. Nothing listens on the machine's own network.

The kubelet and kube-proxy authenticate as the admin and the kubelet allows anonymous calls on
10.88.0.1 only: this is a throwaway test node, never a way to run one.

containerd keeps its content and snapshots under ~/.cache/secoctl/realnode/containerd, so the pod
image (several GB) is imported once per image tag, not once per run. Every container is removed
and every mount under the node's folder undone at stop, and kube-proxy clears its rules.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jobs.localcloud.cluster import controlplane
from jobs.localcloud.cluster.processes import ProcessGroup
from jobs.localcloud.cluster.realnode import binaries as node_binaries

HERE = Path(__file__).parent
BRIDGE = "cni-realpods"
ADDRESS = "10.88.0.1"  # the bridge's, the node's, the API server's and CoreDNS's
SUBNET = "10.88.0.0/24"
NAME = "realnode"
NAMESPACE = "k8s.io"  # containerd's namespace for the CRI


class NodeFailed(RuntimeError):
    """A node component did not start; the message ends with its log."""


def containerd_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "secoctl" / "realnode" / "containerd"


def unavailable() -> str | None:
    """Why no real node can run on this machine, or None: root, the Debian packages, and a bridge it may make."""
    missing = node_binaries.missing_packages()
    if os.geteuid() != 0 or missing:
        return f"a real node needs root and Debian's {', '.join(missing) or 'packages'} (.ci/run installs them)"
    probe = subprocess.run(["ip", "link", "add", "secoctl-probe", "type", "bridge"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this machine lets no bridge be made for the pods: {probe.stderr.strip()}"
    subprocess.run(["ip", "link", "del", "secoctl-probe"], capture_output=True)
    return None


def bridge_up() -> None:
    """The pods' bridge with the node's address, made now so the API server and CoreDNS can bind it."""
    links = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True)
    present = {link["ifname"]: [a["local"] for a in link.get("addr_info", [])] for link in json.loads(links.stdout)}
    if BRIDGE not in present:
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True, capture_output=True)
    if ADDRESS not in present.get(BRIDGE, []):
        subprocess.run(["ip", "addr", "add", f"{ADDRESS}/24", "dev", BRIDGE], check=True, capture_output=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True, capture_output=True)


def _render(name: str, **values: str) -> str:
    text = (HERE / name).read_text()
    for key, value in values.items():
        text = text.replace(key, value)
    return text


class RealNode:
    def __init__(self, plane: controlplane.ControlPlane, workdir: Path):
        self.plane = plane
        self.workdir = workdir
        self.bin = node_binaries.cached()
        self.processes = ProcessGroup(workdir, failure=NodeFailed)

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    def ctr(self, *args: str, stdin=None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["ctr", "--address", str(self.socket), "-n", NAMESPACE, *args],
            stdin=stdin,
            capture_output=True,
            text=stdin is None,
            timeout=1800,
        )
        if check and result.returncode != 0:
            raise NodeFailed(f"ctr {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def images(self) -> set[str]:
        return set(self.ctr("images", "ls", "-q").stdout.split())

    def load_image(self, layout: Path, base_name: str, reference: str) -> str:
        """An OCI image layout into the node's runtime, unless it holds `reference` already."""
        if reference in self.images():
            return reference
        # Blobs the runtime holds stay out of the stream: ctr would write each again (the dependencies
        # layer is 6.9 GB) only to find it present; the import reads them from the content store.
        held = [
            f"--exclude=blobs/{digest.replace(':', '/')}" for digest in self.ctr("content", "ls", "-q").stdout.split()
        ]
        tar = subprocess.Popen(["tar", "-C", str(layout), *held, "-cf", "-", "."], stdout=subprocess.PIPE)
        try:
            self.ctr("images", "import", "--base-name", base_name, "-", stdin=tar.stdout)
        finally:
            tar.stdout.close()
            tar.wait()
        if reference not in self.images():
            raise NodeFailed(f"importing {layout} did not give {reference}; the runtime holds {sorted(self.images())}")
        # The cached root keeps one build of each image (their layers are several GB): older tags go, and
        # so do the references the CRI plugin keeps by config digest for images no kept tag names.
        configs = self._configs()
        stale = {name for name in configs if name.startswith(f"{base_name}:") and name != reference}
        kept = {config for name, config in configs.items() if not name.startswith("sha256:") and name not in stale}
        stale |= {name for name, config in configs.items() if name.startswith("sha256:") and config not in kept}
        if stale:
            self.ctr("images", "rm", "--sync", *sorted(stale))
        return reference

    def _configs(self) -> dict[str, str]:
        """Every image reference in the runtime, with its config's digest."""
        configs = {}
        for line in self.ctr("images", "ls").stdout.splitlines()[1:]:
            name, _kind, manifest = line.split()[:3]
            configs[name] = json.loads(self.ctr("content", "get", manifest).stdout).get("config", {}).get("digest", "")
        return configs

    def start(self) -> "RealNode":
        reason = unavailable()
        if reason:
            raise NodeFailed(reason)
        self.workdir.mkdir(parents=True, exist_ok=True)
        bridge_up()
        state = self.workdir
        root = containerd_root()
        root.mkdir(parents=True, exist_ok=True)
        (state / "net.d").mkdir(exist_ok=True)
        (state / "net.d" / "10-realpods.conflist").write_text(_render("bridge.conflist", STATE=str(state)))
        (state / "containerd.toml").write_text(_render("containerd.toml", STATE=str(state), ROOT=str(root)))
        self.processes.spawn("containerd", ["containerd", "--config", str(state / "containerd.toml")])
        self.processes.wait(
            "containerd", lambda: self.socket.exists() and self.ctr("version", check=False).returncode == 0, timeout=60
        )
        self.remove_containers()  # a run stopped hard leaves its containers in the cached root
        tarball = self.bin / "pause-image.tar"
        if node_binaries.PAUSE_IMAGE not in self.images():
            with open(tarball, "rb") as handle:
                self.ctr(
                    "images", "import", "--base-name", node_binaries.PAUSE_IMAGE.rsplit(":", 1)[0], "-", stdin=handle
                )

        (state / "kubelet.yaml").write_text(_render("kubelet.yaml", STATE=str(state), NODE_IP=ADDRESS))
        self.processes.spawn(
            "kubelet",
            [
                str(self.bin / "kubelet"),
                "--config",
                str(state / "kubelet.yaml"),
                f"--kubeconfig={self.plane.admin_kubeconfig}",
                f"--hostname-override={NAME}",
                f"--node-ip={ADDRESS}",
                f"--root-dir={state / 'kubelet'}",
                f"--cert-dir={state / 'kubelet-pki'}",
            ],
        )
        self.processes.wait("the node", self._ready, timeout=120)

        proxy_health, proxy_metrics = controlplane.free_port(), controlplane.free_port()
        self.processes.spawn(
            "kube-proxy",
            [
                str(self.bin / "kube-proxy"),
                f"--kubeconfig={self.plane.admin_kubeconfig}",
                f"--hostname-override={NAME}",
                f"--cluster-cidr={SUBNET}",
                "--proxy-mode=iptables",
                "--conntrack-max-per-core=0",
                "--iptables-localhost-nodeports=false",
                f"--bind-address={ADDRESS}",
                f"--healthz-bind-address=127.0.0.1:{proxy_health}",
                f"--metrics-bind-address=127.0.0.1:{proxy_metrics}",
            ],
        )
        self.processes.wait(
            "kube-proxy", lambda: self.plane._healthy(f"http://127.0.0.1:{proxy_health}/healthz"), timeout=60
        )

        ready_port = controlplane.free_port()
        (state / "Corefile").write_text(
            _render(
                "Corefile",
                ADMIN_KUBECONFIG=str(self.plane.admin_kubeconfig),
                BIND=ADDRESS,
                READY=f"127.0.0.1:{ready_port}",
            )
        )
        self.processes.spawn("coredns", [str(self.bin / "coredns"), "-conf", str(state / "Corefile")])
        self.processes.wait("CoreDNS", lambda: self.plane._healthy(f"http://127.0.0.1:{ready_port}/ready"), timeout=60)
        return self

    def _ready(self) -> bool:
        listing = self.plane.kubectl("get", "node", NAME, "-o", "json", check=False)
        if listing.returncode != 0:
            return False
        conditions = json.loads(listing.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def remove_containers(self) -> None:
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 20
        while self.ctr("tasks", "ls", "-q", check=False).stdout.split() and time.monotonic() < deadline:
            for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
                self.ctr("tasks", "delete", task, check=False)
            time.sleep(0.5)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "rm", container, check=False)

    def _unmount(self) -> None:
        """The kubelet's volume mounts (projected tokens, memory emptyDirs) under the node's folder."""
        prefix = str(self.workdir.resolve()) + "/"
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)

    def _drain(self, timeout: float = 60.0) -> None:
        """Every pod deleted while the kubelet runs, so it stops their sandboxes the CRI way (CNI DEL too)."""
        self.plane.kubectl(
            "delete", "pods", "--all", "--all-namespaces", "--force", "--grace-period=0", "--wait=false", check=False
        )
        deadline = time.monotonic() + timeout
        while self.ctr("tasks", "ls", "-q", check=False).stdout.split() and time.monotonic() < deadline:
            time.sleep(1)

    def stop(self) -> None:
        if self.processes.alive("kubelet") and self.processes.alive("containerd"):
            self._drain()
        for name in ("coredns", "kube-proxy", "kubelet"):
            self.processes.terminate(name)
        if self.processes.alive("containerd"):
            self.remove_containers()
        self.processes.terminate("containerd")
        subprocess.run([str(self.bin / "kube-proxy"), "--cleanup"], capture_output=True)
        _forget_cni_rules()
        self._unmount()
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def _forget_cni_rules() -> None:
    """The bridge plugin's NAT rules of sandboxes that were not torn down the CNI way (a hard stop)."""
    saved = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    chains = set()
    for line in saved.splitlines():
        if line.startswith("-A ") and '"name: \\"realpods\\"' in line:
            rule = shlex.split(line)
            subprocess.run(["iptables", "-t", "nat", "-D", *rule[1:]], capture_output=True)
            chains.update(rule[i + 1] for i, word in enumerate(rule) if word == "-j" and rule[i + 1].startswith("CNI-"))
    for chain in chains:
        subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True)
        subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True)


@dataclass
class Cluster:
    plane: controlplane.ControlPlane
    node: RealNode
    image: str  # the pod image's reference in the node's runtime
    timings: dict[str, float]  # seconds: control plane, node, image build, image import


@contextlib.contextmanager
def cluster(workdir: Path, log=print, bin: Path | None = None) -> Iterator[Cluster]:
    """The control plane on the pods' bridge (its binaries from `bin`, else the cached cluster build),
    the real node, the pod image loaded; all stopped after."""
    reason = unavailable()
    if reason:
        raise NodeFailed(reason)
    bridge_up()  # before the API server binds its address
    timings: dict[str, float] = {}
    started = time.monotonic()
    plane = controlplane.started(
        workdir / "control-plane", address=ADDRESS, simulated_nodes=False, **({"bin": bin} if bin else {})
    )
    timings["control plane"] = time.monotonic() - started
    node = RealNode(plane, workdir / "node")
    try:
        started = time.monotonic()
        node.start()
        timings["node"] = time.monotonic() - started
        from images import build

        started = time.monotonic()
        image = build.build(log)
        timings["image build"] = time.monotonic() - started
        started = time.monotonic()
        reference = node.load_image(image.layout, "localhost/secoctl", f"localhost/secoctl:{image.tag}")
        timings["image import"] = time.monotonic() - started
        yield Cluster(plane, node, reference, timings)
    finally:
        node.stop()
        plane.stop()
