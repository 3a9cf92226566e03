"""A real Kubernetes control plane on 127.0.0.1 for the cluster tests, and for a person to poke at.

(On another address of this machine, without kwok, when a real node joins: jobs/localcloud/cluster/realnode.)

etcd, kube-apiserver (RBAC authorization; PodSecurity admission is on by default),
kube-controller-manager (the real Job, pod GC and service-account controllers) and kube-scheduler,
plus kwok simulating nodes and pod life cycles: CPU nodes and GPU nodes with `nvidia.com/gpu`
capacity. The admin authenticates with a static token in system:masters; everything else (the
driver) gets ServiceAccount tokens from the TokenRequest API, so RBAC is the apiserver's to enforce.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from jobs.localcloud.cluster import binaries
from jobs.localcloud.cluster.processes import ProcessGroup
from jobs.localcloud.servers import free_port

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
NAMESPACE = "seco"  # manifests/namespace.yaml
CLAIM = "secoctl-storage"
GPU_NODES = {"gpu-node-0": 8, "gpu-node-1": 8}
CPU_NODES = ("cpu-node-0", "cpu-node-1")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


def kubeconfig(server: str, token: str, certificate_authority: Path, namespace: str = "default") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "secoctl-test",
        "clusters": [
            {"name": "secoctl-test", "cluster": {"server": server, "certificate-authority": str(certificate_authority)}}
        ],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [
            {"name": "secoctl-test", "context": {"cluster": "secoctl-test", "user": "user", "namespace": namespace}}
        ],
    }


def node(name: str, gpus: int) -> dict:
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "type": "kwok",
                **({"nvidia.com/gpu.present": "true"} if gpus else {}),
            },
        },
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake"},
        },
    }


@dataclass
class ControlPlane:
    workdir: Path
    bin: Path = field(default_factory=binaries.cached)
    server: str = ""
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    # Where the API server listens and what it advertises: 127.0.0.1 for kwok's nodes; a real node's
    # pods need an address they reach, which the `kubernetes` Service's endpoint then names.
    address: str = "127.0.0.1"
    simulated_nodes: bool = True  # kwok and its GPU and CPU nodes; off when a real node joins
    # A thousand nodes on a shared machine (benchmarks/scale.py): the controllers' and scheduler's
    # client rate 200/s (not 20 and 50), kwok's lease, node and pod workers 16 each (not 4: one
    # kubelet renews one lease, kwok renews them all), and a node NotReady after 50 s without a lease
    # renewal (upstream's default) rather than the tests' 20 s, which a starved kwok misses.
    many_nodes: bool = False

    def __post_init__(self) -> None:
        self.processes = ProcessGroup(self.workdir)

    @property
    def certificate_authority(self) -> Path:
        """The apiserver writes its self-signed serving certificate and the CA that signed it here."""
        return self.workdir / "pki" / "apiserver.crt"

    @property
    def pod_log(self) -> Path:
        return self.workdir / "pod.log"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.processes.spawn(name, [str(self.bin / argv[0]), *argv[1:]])

    def _healthy(self, url: str, token: str | None = None) -> bool:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=2, context=ssl._create_unverified_context()) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self) -> "ControlPlane":
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        subprocess.run(["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")],
            check=True,
            capture_output=True,
        )
        (pki / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        loopback = self.address == "127.0.0.1"
        self._spawn(
            "etcd",
            [
                "etcd",
                "--data-dir",
                str(self.workdir / "etcd"),
                "--unsafe-no-fsync",
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer_port}",
                "--listen-metrics-urls",
                f"http://127.0.0.1:{free_port()}",
            ],
        )
        self.processes.wait("etcd", lambda: self._healthy(f"http://127.0.0.1:{etcd_port}/health"))
        self.server = f"https://{self.address}:{api_port}"
        self._spawn(
            "kube-apiserver",
            [
                "kube-apiserver",
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={api_port}",
                f"--cert-dir={pki}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--allow-privileged=false",
                "--enable-priority-and-fairness=false",
                # A loopback address cannot be the `kubernetes` Service's endpoint: then no endpoint at all.
                *(["--endpoint-reconciler-type=none"] if loopback else []),
                "--kubelet-preferred-address-types=InternalIP",  # kwok's nodes: logs are served on 127.0.0.1
            ],
        )
        self.processes.wait("kube-apiserver", lambda: self._healthy(f"{self.server}/readyz", self.token), timeout=90)
        self.admin_kubeconfig.write_text(
            yaml.safe_dump(kubeconfig(self.server, self.token, self.certificate_authority))
        )
        common = [f"--kubeconfig={self.admin_kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1"]
        if self.many_nodes:
            common += ["--kube-api-qps=200", "--kube-api-burst=400"]
        self._spawn(
            "kube-controller-manager",
            [
                "kube-controller-manager",
                *common,
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                "--controllers=*",
                f"--root-ca-file={self.certificate_authority}",  # kube-root-ca.crt: how a pod trusts the API server
                "--use-service-account-credentials=false",
                f"--node-monitor-grace-period={50 if self.many_nodes else 20}s",
            ],
        )
        self._spawn("kube-scheduler", ["kube-scheduler", *common, f"--secure-port={free_port()}"])
        if self.simulated_nodes:
            self._start_kwok(pki)
        self.processes.wait(
            "the default ServiceAccount",
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
            timeout=60,
        )
        return self

    def _start_kwok(self, pki: Path) -> None:
        config = self.workdir / "kwok.yaml"
        documents = [yaml.safe_load(p.read_text()) for p in sorted((self.bin / "stages").glob("*.yaml"))]
        documents += list(yaml.safe_load_all((HERE / "stages.yaml").read_text()))
        # Every simulated container "logs" this file; kwok serves it through the kubelet API, so
        # `secoctl logs` goes the real way: apiserver -> node -> container log.
        self.pod_log.write_text("")
        documents.append(
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "ClusterLogs",
                "metadata": {"name": "every-pod"},
                "spec": {"selector": {}, "logs": [{"containers": [], "logsFile": str(self.pod_log), "follow": True}]},
            }
        )
        if self.many_nodes:
            documents.append(
                {
                    "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
                    "kind": "KwokConfiguration",
                    "options": {f"{kind}Parallelism": 16 for kind in ("nodeLease", "nodePlayStage", "podPlayStage")},
                }
            )
        config.write_text(yaml.safe_dump_all(documents))
        kubelet_port = free_port()
        self._spawn(
            "kwok",
            [
                "kwok",
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--config={config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                f"--server-address=127.0.0.1:{kubelet_port}",
                f"--node-port={kubelet_port}",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
            ],
        )
        for name, gpus in [*GPU_NODES.items(), *((n, 0) for n in CPU_NODES)]:
            self.kubectl("apply", "-f", "-", stdin=json.dumps(node(name, gpus)))
        self.processes.wait("nodes", self._nodes_ready, timeout=60)

    def _nodes_ready(self) -> bool:
        listing = json.loads(self.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        ready = [
            n
            for n in listing
            for c in n.get("status", {}).get("conditions", [])
            if c["type"] == "Ready" and c["status"] == "True"
        ]
        return len(ready) == len(GPU_NODES) + len(CPU_NODES)

    def prepare(self, storage: Path) -> None:
        """What an admin installs (`manifests/`), and a volume on `storage` with its claim, as `self.storage`."""
        applied = self.kubectl("apply", "-k", str(ROOT / "manifests"))
        if "namespace/seco" not in applied.stdout:
            raise RuntimeError(f"manifests/ did not create namespace/seco: {applied.stdout}")
        self.kubectl(
            "apply",
            "-f",
            "-",
            stdin=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": [
                        {
                            "apiVersion": "v1",
                            "kind": "PersistentVolume",
                            "metadata": {"name": "secoctl-test-storage"},
                            "spec": {
                                "capacity": {"storage": "10Gi"},
                                "accessModes": ["ReadWriteMany"],
                                "storageClassName": "",
                                "hostPath": {"path": str(storage)},
                                "claimRef": {"namespace": NAMESPACE, "name": CLAIM},
                            },
                        },
                        {
                            "apiVersion": "v1",
                            "kind": "PersistentVolumeClaim",
                            "metadata": {"name": CLAIM, "namespace": NAMESPACE},
                            "spec": {
                                "accessModes": ["ReadWriteMany"],
                                "storageClassName": "",
                                "volumeName": "secoctl-test-storage",
                                "resources": {"requests": {"storage": "10Gi"}},
                            },
                        },
                    ],
                }
            ),
        )
        self.storage = storage

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, kubeconfig_path: Path | None = None
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={kubeconfig_path or self.admin_kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def service_account_kubeconfig(self, namespace: str, account: str, path: Path) -> Path:
        """A kubeconfig holding a fresh token of `account`: what a pod under that account would get."""
        token = self.kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
        path.write_text(yaml.safe_dump(kubeconfig(self.server, token, self.certificate_authority, namespace)))
        return path

    def stop(self) -> None:
        self.processes.stop()


def started(workdir: Path | None = None, **options) -> ControlPlane:
    return ControlPlane(workdir or Path(tempfile.mkdtemp(prefix="secoctl-cluster-")), **options).start()
