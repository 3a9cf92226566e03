"""What tests/images/runpod.py hands runc is the rendered pod's own securityContext, command and mounts."""

from __future__ import annotations

from pathlib import Path

from secoctl import render
from secoctl.spec.file import load_documents
from tests.images import runpod

ROOT = Path(__file__).resolve().parents[2]


def pretrain_job() -> dict:
    text = (ROOT / "examples" / "quickstart.yaml").read_text()
    text = text.replace("\nspec:\n", "\nspec:\n  storage: file:///data/seco\n  storageClaim: seco-data\n", 1)
    experiment = load_documents(text, "quickstart.yaml")[0]
    return next(
        o for o in render.render(experiment) if o["kind"] == "Job" and o["metadata"]["name"].endswith("-pretrain")
    )


def test_the_runtime_config_is_the_pods_security_context_command_and_volumes(tmp_path):
    job = pretrain_job()
    pod_spec = job["spec"]["template"]["spec"]
    volumes = {"spec": tmp_path / "spec", "tmp": tmp_path / "tmp", render.STORAGE_MOUNT_NAME: tmp_path / "storage"}
    config = runpod.runtime_config(
        pod_spec, tmp_path / "rootfs", "quickstart-pretrain-0", volumes, tmp_path / "etc", [], 0
    )
    process = config["process"]
    assert process["user"] == {"uid": 65532, "gid": 65532, "additionalGids": [65532]}
    command = pod_spec["containers"][0]["command"]
    assert process["args"] == command and command[command.index("--") + 1] == "torchrun"  # behind the log keeper
    assert process["noNewPrivileges"] and not any(process["capabilities"].values())
    assert "HOME=/tmp" in process["env"] and "JOB_COMPLETION_INDEX=0" in process["env"]
    assert config["root"]["readonly"] is True
    mounts = {m["destination"]: m for m in config["mounts"]}
    assert mounts["/tmp"]["source"] == str(tmp_path / "tmp") and mounts["/data/seco"]["source"] == str(
        tmp_path / "storage"
    )
    assert "ro" in mounts["/etc/secoctl"]["options"] and mounts["/dev/shm"]["type"] == "tmpfs"
    assert (
        f"size={runpod.quantity_bytes(pod_spec['containers'][0]['resources']['limits']['memory'])}"
        in mounts["/dev/shm"]["options"]
    )


def test_the_hosts_file_names_the_pod_by_its_fqdn_and_the_headless_service_peers():
    pod_spec = pretrain_job()["spec"]["template"]["spec"]
    hosts = runpod.hosts_file("quickstart-pretrain-0", pod_spec, ["quickstart-pretrain-0", "quickstart-pretrain-1"])
    assert "quickstart-pretrain-0.quickstart-pretrain.default.svc.cluster.local\tquickstart-pretrain-0" in hosts
    assert "127.0.0.1\tquickstart-pretrain-1.quickstart-pretrain" in hosts
