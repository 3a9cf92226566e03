"""Run one rendered pod's container in the built image with runc, under the pod's own securityContext.

`python -m tests.images.runpod --pod POD.json --rootfs DIR --volumes VOLUMES.json [--bind HOST]...`
is what a kubelet would set up for one container, reduced to what the image has to live with: the
image's root file system read-only (`readOnlyRootFilesystem`), the pod's uid and gid with fsGroup as
a supplementary group, no capabilities and no new privileges, the memory limit as a cgroup limit,
the container's command, env and working directory, every volume mount of the pod (`tmp` an
emptyDir, `shm` a memory-backed emptyDir of its size limit, the spec ConfigMap read-only, the storage
claim), and kubelet-managed /etc/hosts, /etc/hostname and /etc/resolv.conf. The Job controller's
JOB_COMPLETION_INDEX comes from this process's environment, as the local executor sets it.

Deliberate differences from a pod: the network namespace is the host's (pods reach the STAC server
and each other on 127.0.0.1; a pod has its own IP), so /etc/hosts maps the headless Service's pod
names to 127.0.0.1 where cluster DNS would answer; there is no seccomp profile (RuntimeDefault is
the runtime's own); and `--bind` adds test-only read-only folders (the synthetic EuroSAT set).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

NAMESPACE = "default"
CLUSTER_DOMAIN = "cluster.local"
IMAGE_PATH = "/opt/secoctl/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def quantity_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", value).groups()
    return int(float(number) * _UNITS.get(unit, 1))


def hostname(job: str, index: int, pod_spec: dict) -> str:
    """An Indexed Job's pod with a subdomain is `<job>-<index>`; others are named by a random suffix."""
    return f"{job}-{index}" if pod_spec.get("subdomain") else f"{job}-{index}-{uuid.uuid4().hex[:5]}"


def hosts_file(name: str, pod_spec: dict, peers: list[str]) -> str:
    """The kubelet's /etc/hosts (the pod's FQDN first), plus the headless Service names DNS would answer."""
    lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    subdomain = pod_spec.get("subdomain")
    if subdomain:
        lines.append(f"127.0.0.1\t{name}.{subdomain}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}\t{name}")
        lines.extend(f"127.0.0.1\t{peer}.{subdomain}" for peer in peers)
    else:
        lines.append(f"127.0.0.1\t{name}")
    return "\n".join(lines) + "\n"


def runtime_config(
    pod_spec: dict, rootfs: Path, name: str, volumes: dict[str, Path], etc: Path, binds: list[Path], index: int
) -> dict:
    """The OCI runtime config of the pod's only container."""
    (container,) = pod_spec["containers"]
    pod_security, security = pod_spec["securityContext"], container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]} and security["allowPrivilegeEscalation"] is False
    memory = quantity_bytes(container["resources"]["limits"]["memory"])
    env = [
        f"PATH={IMAGE_PATH}",
        f"HOSTNAME={name}",
        f"JOB_COMPLETION_INDEX={index}",
        *(f"{item['name']}={item['value']}" for item in container["env"]),
    ]
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]
    if not any(m["mountPath"] == "/dev/shm" for m in container["volumeMounts"]):  # the runtime's default /dev/shm
        mounts.append(
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            }
        )
    by_name = {volume["name"]: volume for volume in pod_spec["volumes"]}
    for mount in container["volumeMounts"]:
        volume = by_name[mount["name"]]
        if volume.get("emptyDir", {}).get("medium") == "Memory":
            size = quantity_bytes(volume["emptyDir"]["sizeLimit"])
            mounts.append(
                {
                    "destination": mount["mountPath"],
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": ["nosuid", "nodev", "mode=1777", f"size={size}"],
                }
            )
            continue
        options = ["rbind", "ro" if mount.get("readOnly") else "rw", "nosuid", "nodev"]
        mounts.append(
            {
                "destination": mount["mountPath"],
                "type": "bind",
                "source": str(volumes[mount["name"]]),
                "options": options,
            }
        )
    for file in ("hosts", "hostname", "resolv.conf"):
        mounts.append(
            {
                "destination": f"/etc/{file}",
                "type": "bind",
                "source": str(etc / file),
                "options": ["rbind", "ro", "nosuid", "nodev"],
            }
        )
    for folder in binds:
        mounts.append(
            {
                "destination": str(folder),
                "type": "bind",
                "source": str(folder),
                "options": ["rbind", "ro", "nosuid", "nodev"],
            }
        )
    no_capabilities = {kind: [] for kind in ("bounding", "effective", "inheritable", "permitted", "ambient")}
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {
                "uid": pod_security["runAsUser"],
                "gid": pod_security["runAsGroup"],
                "additionalGids": [pod_security["fsGroup"]],
            },
            "args": container["command"],
            "env": env,
            "cwd": "/tmp",  # the image's WorkingDir
            "capabilities": no_capabilities,
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": security["readOnlyRootFilesystem"]},
        "hostname": name,
        "mounts": mounts,
        "linux": {
            "resources": {"memory": {"limit": memory}},
            "namespaces": [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def run(pod: dict, rootfs: Path, volumes: dict[str, Path], binds: list[Path], index: int) -> int:
    """Run the pod's container to its end in a throwaway bundle; its exit status."""
    pod_spec = pod["spec"]["template"]["spec"]
    job = pod["metadata"]["name"]
    name = hostname(job, index, pod_spec)
    peers = [f"{job}-{i}" for i in range(pod["spec"].get("completions", 1))]
    with tempfile.TemporaryDirectory(prefix="runpod-") as scratch:
        bundle = Path(scratch)
        etc = bundle / "etc"
        etc.mkdir()
        (etc / "hosts").write_text(hosts_file(name, pod_spec, peers))
        (etc / "hostname").write_text(name + "\n")
        (etc / "resolv.conf").write_text(
            f"search {NAMESPACE}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\noptions ndots:5\n"
        )
        empty_dir = bundle / "tmp"
        empty_dir.mkdir(mode=0o1777)
        os.chmod(empty_dir, 0o1777)
        config = runtime_config(pod_spec, rootfs, name, {**volumes, "tmp": empty_dir}, etc, binds, index)
        (bundle / "config.json").write_text(json.dumps(config))
        runc = shutil.which("runc") or "runc"
        return subprocess.call([runc, "run", "--bundle", str(bundle), f"{name}-{uuid.uuid4().hex[:8]}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.images.runpod")
    parser.add_argument("--pod", type=Path, required=True, help="a rendered Job, as JSON")
    parser.add_argument("--rootfs", type=Path, required=True)
    parser.add_argument("--volumes", type=Path, required=True, help="JSON: volume name -> host folder")
    parser.add_argument("--bind", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    volumes = {name: Path(path) for name, path in json.loads(args.volumes.read_text()).items()}
    index = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    return run(json.loads(args.pod.read_text()), args.rootfs, volumes, args.bind, index)


if __name__ == "__main__":
    sys.exit(main())
