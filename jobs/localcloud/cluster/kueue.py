"""A real Kueue controller manager for the cluster tests: built from the Go module proxy, run on 127.0.0.1.

The binary is `go install`ed at its tag (Kueue's own go.mod and go.sum pin every dependency), and
its CRDs and webhook configurations are copied from the same module in the Go module cache, so the
objects the tests install are the ones that release ships. Cached under
~/.cache/secoctl/kueue/<version>-<key>, apart from the Kubernetes binaries (their cache key is not
touched by a Kueue upgrade). `python -m jobs.localcloud.cluster.binaries` (run by `make test`) builds both.

Running it outside a cluster: Kueue's internal certificate management finds a Secret we create
beforehand, holding a CA and a serving certificate that names both the Service DNS name Kueue checks
and 127.0.0.1, and injects that CA into the webhook configurations and CRD conversion webhooks,
which point at `https://127.0.0.1:<port>`. So the apiserver calls Kueue's real admission and
conversion webhooks, and no cert-manager, Service or kube-proxy is needed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from jobs.localcloud.cluster import binaries
from jobs.localcloud.cluster.processes import ProcessGroup
from secoctl.cache import cache_root

KUEUE = "v0.17.0"
MODULE = "sigs.k8s.io/kueue"
NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"  # only its DNS name matters: the certificate must name it
SECRET = "kueue-webhook-server-cert"
# Webhooks for these API groups are installed; the others belong to integrations left off.
WEBHOOK_GROUPS = {"batch", "kueue.x-k8s.io"}
CONVERTED = ("localqueues", "clusterqueues", "workloads", "cohorts", "multikueueclusters")
QUEUES = Path(__file__).resolve().parents[3] / "manifests" / "kueue"  # what an admin installs beside Kueue
CLUSTER_QUEUE = "gpu-cluster-queue"  # manifests/kueue
URGENT = "seco-urgent"  # a PriorityClass above seco-batch, made by `with_queues`


def cache_key() -> str:
    return f"kueue-{KUEUE}-{binaries.build_digest([])}"


def cache_dir() -> Path:
    return cache_root("kueue", cache_key())


def apiserver_dir() -> Path:
    """The version-stamped kube-apiserver, beside Kueue, keyed as the cluster binaries it is linked from."""
    return cache_dir() / f"apiserver-{binaries.cache_key()}"


def _complete(target: Path) -> bool:
    return all((target / n).is_file() for n in ("kueue", "webhooks.yaml")) and any((target / "crds").glob("*.yaml"))


def _stamped_apiserver(target: Path, log=print) -> None:
    """kube-apiserver linked again with its release in /version (the Go build cache holds its packages).

    The cluster binaries are built without version stamps, so their apiserver reports
    v0.0.0-master, which Kueue refuses to start against; only the link step runs again here.
    """
    stamp = " ".join(
        f"-X k8s.io/component-base/version.{name}={value}"
        for name, value in (
            ("gitVersion", binaries.KUBERNETES),
            ("gitMajor", binaries.KUBERNETES.split(".")[0].removeprefix("v")),
            ("gitMinor", binaries.KUBERNETES.split(".")[1]),
            ("gitTreeState", "clean"),
        )
    )
    started = time.monotonic()
    log("kueue: linking kube-apiserver with its version stamped ...")
    target.mkdir(parents=True, exist_ok=True)
    staging = target / "kube-apiserver.partial"
    flags = [f"{flag} {stamp}" if flag.startswith("-ldflags=") else flag for flag in binaries.GO_FLAGS]
    binaries._go(
        ["build", *flags, "-o", str(staging), "k8s.io/kubernetes/cmd/kube-apiserver"],
        binaries.GOBUILD / "kubernetes",
        binaries._environment(target),
    )
    staging.rename(target / "kube-apiserver")
    log(f"kueue: kube-apiserver linked in {time.monotonic() - started:.0f} s into {target}")


def control_plane_bin(folder: Path) -> Path:
    """The cluster binaries, with the version-stamped kube-apiserver: what a control plane for Kueue runs."""
    stamped = apiserver_dir() / "kube-apiserver"
    if not stamped.is_file():
        raise FileNotFoundError(
            f"{stamped} is missing: run `{binaries.BUILD_COMMAND}` (`make test` runs it before pytest)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for entry in binaries.cached().iterdir():
        (folder / entry.name).symlink_to(entry)
    (folder / "kube-apiserver").unlink()
    (folder / "kube-apiserver").symlink_to(stamped)
    return folder


def build(target: Path, log=print) -> None:
    """`go install` Kueue and copy its CRDs and webhooks; renamed into `target` only when all succeeded."""
    started = time.monotonic()
    with binaries.staged(target) as staging:
        env = binaries._environment(staging)
        log(f"kueue: building {MODULE}/cmd/kueue@{KUEUE} ...")
        binaries._go(["install", *binaries.GO_FLAGS, f"{MODULE}/cmd/kueue@{KUEUE}"], staging, env)
        modules = Path(binaries._go(["env", "GOMODCACHE"], staging, env).strip())
        source = modules / f"{MODULE}@{KUEUE}" / "config" / "components"
        (staging / "crds").mkdir()
        for crd in sorted((source / "crd" / "bases").glob("*.yaml")):
            shutil.copy(crd, staging / "crds" / crd.name)
        shutil.copy(source / "webhook" / "manifests.yaml", staging / "webhooks.yaml")
    log(f"kueue: built in {time.monotonic() - started:.0f} s into {target}")


def ensure(log=print) -> Path:
    """Kueue (built once per Kueue version) and the stamped kube-apiserver (once per cluster build)."""
    target = cache_dir()
    if _complete(target):
        log(f"kueue: cached in {target}")
    else:
        build(target, log)
    if not (apiserver_dir() / "kube-apiserver").is_file():
        _stamped_apiserver(apiserver_dir(), log)
    return target


def cached() -> Path:
    target = cache_dir()
    return binaries.required(target, _complete(target), "Kueue is")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def certificates(folder: Path) -> dict[str, bytes]:
    """A CA (named as Kueue's cert rotator expects) and a serving certificate for the Service name and 127.0.0.1."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt, key, csr, crt = (folder / n for n in ("ca.key", "ca.crt", "tls.key", "tls.csr", "tls.crt"))
    # PKCS#1 keys ("RSA PRIVATE KEY"): the only kind Kueue's cert rotator parses.
    for path in (ca_key, key):
        _openssl("genrsa", "-traditional", "-out", str(path), "2048")
    _openssl(
        "req",
        "-x509",
        "-key",
        str(ca_key),
        "-out",
        str(ca_crt),
        "-days",
        "3650",
        "-subj",
        "/O=kueue/CN=kueue-ca",
        "-addext",
        "subjectAltName=DNS:kueue-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,digitalSignature",
    )
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={SERVICE}.{NAMESPACE}.svc")
    extensions = folder / "tls.ext"
    extensions.write_text(
        f"subjectAltName=DNS:{SERVICE}.{NAMESPACE}.svc,IP:127.0.0.1\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_crt),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "3650",
        "-out",
        str(crt),
        "-extfile",
        str(extensions),
    )
    return {name: (folder / name).read_bytes() for name in ("ca.crt", "ca.key", "tls.crt", "tls.key")}


def webhook_configurations(source: Path, url: str, ca_bundle: str) -> list[dict]:
    """Kueue's webhook configurations, named as its cert rotator expects, calling `url` directly."""
    result = []
    for document in yaml.safe_load_all(source.read_text()):
        kept = []
        for hook in document.get("webhooks") or []:
            groups = {g for rule in hook.get("rules") or [] for g in rule.get("apiGroups") or []}
            if groups and groups <= WEBHOOK_GROUPS:
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": f"{url}{path}", "caBundle": ca_bundle}
                kept.append(hook)
        document["webhooks"] = kept
        document["metadata"] = {"name": f"kueue-{document['metadata']['name']}"}
        result.append(document)
    return result


def crds(source: Path, url: str, ca_bundle: str) -> list[dict]:
    """Kueue's CRDs, the ones with two served versions converting through Kueue's webhook."""
    result = []
    for path in sorted(source.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["plural"] in CONVERTED:
            crd["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {"url": f"{url}/convert", "caBundle": ca_bundle},
                },
            }
        result.append(crd)
    return result


def configuration(webhook_port: int, health_port: int, cert_dir: Path) -> dict:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": True, "webhookServiceName": SERVICE, "webhookSecretName": SECRET},
        "integrations": {"frameworks": ["batch/job"]},
    }


class Kueue:
    """Kueue's controller manager against a started `ControlPlane`, with its CRDs and webhooks installed."""

    def __init__(self, plane, folder: Path | None = None):
        self.plane, self.bin = plane, cached()
        self.folder = folder or plane.workdir / "kueue"
        self.processes = ProcessGroup(self.folder)
        self.webhooks: list[dict] = []  # the webhook configurations it installed, removed again by `stop`

    def start(self) -> "Kueue":
        from jobs.localcloud.servers import free_port

        plane, folder = self.plane, self.folder
        cert_dir = folder / "certs"
        certs = certificates(cert_dir)
        ca_bundle = base64.b64encode(certs["ca.crt"]).decode()
        webhook_port, health_port = free_port(), free_port()
        url = f"https://127.0.0.1:{webhook_port}"
        items = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET, "namespace": NAMESPACE},
                "type": "Opaque",
                "data": {k: base64.b64encode(v).decode() for k, v in certs.items()},
            },
            *crds(self.bin / "crds", url, ca_bundle),
        ]
        plane.kubectl(
            "apply", "--server-side", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        )
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        (folder / "config.yaml").write_text(yaml.safe_dump(configuration(webhook_port, health_port, cert_dir)))
        self.processes.spawn(
            "kueue",
            [
                str(self.bin / "kueue"),
                f"--config={folder / 'config.yaml'}",
                "--feature-gates=VisibilityOnDemand=false",
                "--zap-log-level=2",
            ],
            env=dict(os.environ, KUBECONFIG=str(plane.admin_kubeconfig)),
        )
        self.processes.wait(
            "kueue", lambda: plane._healthy(f"http://127.0.0.1:{health_port}/readyz"), timeout=90, interval=0.3
        )
        # The webhooks only once Kueue serves them: with failurePolicy Fail an unserved webhook
        # would refuse every Job.
        self.webhooks = webhook_configurations(self.bin / "webhooks.yaml", url, ca_bundle)
        plane.kubectl(
            "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": self.webhooks})
        )
        self._wait_for_webhook()
        return self

    def _wait_for_webhook(self, timeout: float = 30) -> None:
        """A dry-run ResourceFlavor goes through Kueue's admission: it answers once the CA is in place."""
        probe = json.dumps(
            {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "webhook-probe"}}
        )
        deadline = time.monotonic() + timeout
        while True:
            result = self.plane.kubectl("apply", "--dry-run=server", "-f", "-", stdin=probe, check=False)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kueue's webhooks did not answer: {result.stderr}\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, lines: int = 40) -> str:
        return self.processes.log_tail("kueue", lines)

    def stop(self) -> None:
        """Its webhooks removed first: left behind, with failurePolicy Fail, they would refuse every Job."""
        for webhook in self.webhooks:
            self.plane.kubectl(
                "delete", webhook["kind"].lower(), webhook["metadata"]["name"], "--ignore-not-found", check=False
            )
        self.processes.terminate("kueue")


def with_queues(plane) -> Kueue:
    """Kueue started on `plane`, the queues of manifests/kueue, and a PriorityClass that may preempt seco-batch."""
    controller = Kueue(plane).start()
    plane.kubectl("apply", "-f", str(QUEUES))
    plane.kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": URGENT},
                "value": 2000,
                "description": "test: work that may preempt seco-batch",
            }
        ),
    )
    return controller


def set_quotas(plane, quotas: dict[str, str]) -> None:
    """The ClusterQueue's nominal quota of each named resource (the others stay as manifests/kueue has them)."""
    queue = json.loads(plane.kubectl("get", "clusterqueue", CLUSTER_QUEUE, "-o", "json").stdout)
    resources = queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"]
    unknown = set(quotas) - {r["name"] for r in resources}
    if unknown:
        raise ValueError(f"{CLUSTER_QUEUE} has no quota for {sorted(unknown)}")
    plane.kubectl(
        "patch",
        "clusterqueue",
        CLUSTER_QUEUE,
        "--type=json",
        "-p",
        json.dumps(
            [
                {
                    "op": "replace",
                    "path": f"/spec/resourceGroups/0/flavors/0/resources/{i}/nominalQuota",
                    "value": quotas[r["name"]],
                }
                for i, r in enumerate(resources)
                if r["name"] in quotas
            ]
        ),
    )


def main() -> int:
    try:
        ensure(lambda line: print(line, file=sys.stderr, flush=True))
    except binaries.BuildFailed as error:
        print(f"kueue: build failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
