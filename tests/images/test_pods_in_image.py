"""The built image runs every pod a small quickstart renders, each under its own securityContext, with runc.

No kubelet here: the embedded executor plans the stages and commits them, and each part it starts is
the rendered Job's container run by runc in the image that `python -m images.build` made and `umoci`
unpacked (tests/images/runpod.py says what a pod gets and where it differs). So the image itself is
proven: uid 65532 on a read-only root with HOME=/tmp, the stage entry points, torchrun's c10d
rendezvous at the headless Service's name, /dev/shm for the loader, and storage on a shared claim.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from images import build
from jobs.localcloud import eurosat
from jobs.localcloud.cloud import built_world, serve
from jobs.localcloud.servers import free_port
from secoctl import plan, render, store
from secoctl.backends.local.executor import LocalExecutor
from secoctl.spec.file import load_documents
from secoctl.stored import named_stage_tree
from secoctl.tree import experiment_uri

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUNPOD = Path(__file__).with_name("runpod.py")
POD_GROUP = render.RUN_AS_USER  # fsGroup: what the kubelet makes a volume's group

SPEC = """
apiVersion: seco.dev/v1alpha1
kind: Experiment
metadata: {{name: pods}}
spec:
  storage: "{storage}"
  storageClaim: seco-data
  image: "localhost/{tag}"
  collect:
    source: stac
    stacUrl: "{stac_url}"
    locations: 24
    cities: 40
    patchSize: 32
    bands: [B02, B03, B04]
    samplesPerShard: 6
    workers: 2
    resources: {{cpu: "1", memory: 2Gi}}
  pretrain:
    backbone: resnet18
    maxSteps: 4
    batchSize: 8
    queueSize: 64
    inputSize: 32
    lrMilestones: []
    bf16: false
    loaderWorkers: 1
    checkpointEverySteps: 2
    nodes: 1
    gpusPerNode: 0
    resources: {{cpu: "1", memory: 3Gi}}
  evaluate:
    - {{task: eurosat, protocol: linear, epochs: 2, dataPath: "{eurosat}", baselines: [random]}}
  evaluateResources: {{cpu: "1", memory: 3Gi, gpus: 0}}
  publish: {{name: pods-rn18, version: "1"}}
"""


def _missing_tools() -> list[str]:
    return [tool for tool in ("debootstrap", "runc", "umoci") if shutil.which(tool) is None]


pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),  # the first test builds and unpacks the image: minutes when cold
    pytest.mark.skipif(
        os.geteuid() != 0 or bool(_missing_tools()),
        reason=f"needs root and {', '.join(_missing_tools()) or 'nothing more'} "
        "(apt-get install debootstrap runc umoci)",
    ),
]


def unpacked(image: build.Image) -> Path:
    """The image's root file system as `umoci` unpacks it from the OCI layout, cached by manifest digest."""
    bundles = build.cache_root() / "bundles"
    bundle = bundles / image.manifest_digest.removeprefix("sha256:")[:12]
    if (bundle / "rootfs" / "opt").is_dir():
        return bundle / "rootfs"
    shutil.rmtree(bundles, ignore_errors=True)  # one unpacked image at a time: each is several GB
    bundles.mkdir(parents=True)
    staging = bundles / "unpacking"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{image.layout}:{image.tag}", str(staging)], check=True, capture_output=True
    )
    staging.rename(bundle)
    return bundle / "rootfs"


@pytest.fixture(scope="module")
def image_rootfs() -> tuple[build.Image, Path]:
    image = build.build()
    return image, unpacked(image)


def test_the_image_config_runs_as_the_pods_user_with_home_in_tmp(image_rootfs):
    image, rootfs = image_rootfs
    bundle_config = json.loads((rootfs.parent / "config.json").read_text())  # umoci's, from the image config
    assert bundle_config["process"]["user"]["uid"] == render.RUN_AS_USER == bundle_config["process"]["user"]["gid"]
    assert "HOME=/tmp" in bundle_config["process"]["env"] and bundle_config["process"]["cwd"] == "/tmp"
    assert (rootfs / "opt/secoctl/bin/torchrun").is_file() and (rootfs / "opt/secoctl/bin/secoctl").is_file()


def test_every_rendered_pod_runs_in_the_image_to_published_weights(image_rootfs, tmp_path: Path):
    image, rootfs = image_rootfs
    storage = tmp_path / "storage"
    storage.mkdir(mode=0o2775)
    os.chown(storage, 0, POD_GROUP)
    os.chmod(storage, 0o2775)  # the claim as the kubelet hands it to fsGroup: group-owned, setgid
    datasets = eurosat.make(tmp_path / "datasets" / "eurosat", {"train": 4, "val": 2, "test": 4})
    stac_port = free_port()
    text = SPEC.format(
        storage=storage.as_uri(), tag=image.tag, stac_url=f"http://127.0.0.1:{stac_port}", eurosat=datasets
    )
    experiment = load_documents(text, "pods.yaml")[0]
    objects = render.render(experiment)
    jobs = {obj["metadata"]["labels"][render.LABEL_STAGE]: obj for obj in objects if obj["kind"] == "Job"}
    pods, spec = tmp_path / "pods", tmp_path / "spec"
    pods.mkdir()
    spec.mkdir()
    (spec / "spec.yaml").write_text(next(o for o in objects if o["kind"] == "ConfigMap")["data"]["spec.yaml"])
    for stage, job in jobs.items():
        (pods / f"{stage}.json").write_text(json.dumps(job))
    volumes = tmp_path / "volumes.json"
    volumes.write_text(json.dumps({"spec": str(spec), render.STORAGE_MOUNT_NAME: str(storage)}))

    def pod_argv(stage: plan.Stage, _spec_uri: str) -> list[str]:
        return [
            sys.executable,
            str(RUNPOD),
            "--pod",
            str(pods / f"{stage.name}.json"),
            "--rootfs",
            str(rootfs),
            "--volumes",
            str(volumes),
            "--bind",
            str(datasets),
        ]

    world = built_world(experiment.spec.collect, tmp_path / "worlds", bands=tuple(experiment.spec.collect.bands))
    previous_umask = os.umask(0o002)  # what this process writes, the pods' group may write in too
    try:
        with serve(world, stac_port=stac_port):
            executor = LocalExecutor(storage.as_uri(), argv_for=pod_argv, concurrency=2)
            executor.apply(experiment)
    finally:
        os.umask(previous_umask)

    root = experiment_uri(storage.as_uri(), experiment.name)
    for stage in plan.stages(experiment):
        assert store.exists(named_stage_tree(experiment, stage.name).success), stage.name
    collected = Path(named_stage_tree(experiment, "collect").uri.removeprefix("file://"))
    shards = [p for folder in ("shards", "parts") for p in (collected / folder).iterdir()]
    assert shards and {p.stat().st_uid for p in shards} == {render.RUN_AS_USER}  # written by the pods' user
    metrics = store.read_json(store.join(root, "evaluate", "eurosat-linear-100pct", "metrics.json"))["results"]
    assert set(metrics) == {"this-run", "random"}
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    pulled = subprocess.run(
        [
            str(BIN / "secoctl"),
            "weights",
            "pull",
            "pods-rn18",
            "--storage",
            storage.as_uri(),
            "-o",
            str(tmp_path / "weights"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert any((tmp_path / "weights").glob("*.safetensors"))


def test_the_driver_pod_starts_in_the_image_and_stops_at_the_missing_cluster(image_rootfs, tmp_path: Path):
    """The driver's module and its dependencies import as the pod's user; with no API server it says so in one event."""
    _, rootfs = image_rootfs
    storage = tmp_path / "storage"
    experiment = load_documents(
        SPEC.format(storage=storage.as_uri(), tag="t", stac_url="http://127.0.0.1:1", eurosat=tmp_path), "pods.yaml"
    )[0]
    objects = render.render(experiment)
    driver = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"].endswith("-driver"))
    spec = tmp_path / "spec"
    spec.mkdir()
    storage.mkdir()
    (spec / "spec.yaml").write_text(next(o for o in objects if o["kind"] == "ConfigMap")["data"]["spec.yaml"])
    (tmp_path / "pod.json").write_text(json.dumps(driver))
    (tmp_path / "volumes.json").write_text(json.dumps({"spec": str(spec), render.STORAGE_MOUNT_NAME: str(storage)}))
    result = subprocess.run(
        [
            sys.executable,
            str(RUNPOD),
            "--pod",
            str(tmp_path / "pod.json"),
            "--rootfs",
            str(rootfs),
            "--volumes",
            str(tmp_path / "volumes.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 2 and [e["event"] for e in events] == ["driver_error"], result.stdout + result.stderr
    assert "kubeconfig" in events[0]["message"]
