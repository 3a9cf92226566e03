"""The stages of an experiment, one record each, in the order they run.

Plan, render, the driver, `status`, `logs` and the spec's name checks read these records and
nothing else about a stage (as TorchX's schedulers read an AppDef's `Role`s), so adding a stage is
adding a record here and its `jobs/<name>` package. Each rule is a function of the spec; render
turns a record into a pod template, the local executor into processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from secoctl.model_card import RGB_BANDS
from secoctl.quantity import cache_budget
from secoctl.spec import ExperimentSpec, Resources

DRIVER = "driver"  # the driver Job's stage label: status and logs show it beside the stages
SUBSCRIPTION_KEY = "PC_SDK_SUBSCRIPTION_KEY"  # planetary_computer's setting, read by jobs/collect/signing.py
PUBLISH_RESOURCES = Resources(cpu="1", memory="4Gi")
SHARD_CACHE = "/tmp/training-shards"  # on the pod's /tmp emptyDir (its local disk), read by jobs/pretrain/shard_cache.py


@dataclass(frozen=True)
class Volume:
    """A volume a stage's pods mount besides the spec, /tmp, storage and /dev/shm.

    `source` is the pod volume's source as Kubernetes spells it, e.g. `{"emptyDir": {"sizeLimit": "100Gi"}}`
    for a node-local cache.
    """

    name: str
    mount_path: str
    source: dict[str, Any]


def _none(spec: ExperimentSpec) -> tuple:
    return ()


def _no_gpus(spec: ExperimentSpec) -> int:
    return 0


@dataclass(frozen=True)
class StageRecord:
    name: str
    parts: Callable[[ExperimentSpec], int]  # pods (Indexed Job completions); 0: the spec does not ask for it
    section: Callable[[ExperimentSpec], Any]  # what it computes from: its fingerprint's input
    image: Callable[[ExperimentSpec], str]
    resources: Callable[[ExperimentSpec], Resources]  # one pod's
    gpus: Callable[[ExperimentSpec], int] = _no_gpus  # one pod's
    # One torchrun agent per part, meeting at part 0 through a headless Service; one part on one machine.
    distributed: bool = False
    shared_memory: bool = False  # /dev/shm as large as the pod's memory, for DataLoader workers
    retry_per_part: bool = False  # a failing part retries on its own instead of failing its siblings
    volumes: Callable[[ExperimentSpec], tuple[Volume, ...]] = _none
    env: Callable[[ExperimentSpec], tuple[dict[str, Any], ...]] = _none  # container env, as Kubernetes spells it

    @property
    def module(self) -> str:
        return f"jobs.{self.name}"


def _driver_image(spec: ExperimentSpec) -> str:
    """The small image (no torch) where a stage needs none."""
    return spec.driver_image or spec.image


def _subscription_key_env(spec: ExperimentSpec) -> tuple[dict[str, Any], ...]:
    """That one key, not the whole Secret, and for the collect pods only: the rest never sign a URL."""
    secret = spec.collect.subscription_key_secret
    return ({"name": SUBSCRIPTION_KEY, "valueFrom": {"secretKeyRef": {"name": secret.secret_name,
                                                                     "key": SUBSCRIPTION_KEY}}},) if secret else ()


def _training_input(spec: ExperimentSpec) -> dict[str, Any]:
    """What the training-shards stage derives from the record: the model's bands, stretched to uint8."""
    return {"bands": list(RGB_BANDS), "encoding": "uint8"}


def _shard_cache_env(spec: ExperimentSpec) -> tuple[dict[str, Any], ...]:
    """Each pretrain node caches the training shards it reads on its /tmp volume (sized by ephemeralStorage)."""
    return ({"name": "SECOCTL_SHARD_CACHE", "value": SHARD_CACHE},
            {"name": "SECOCTL_SHARD_CACHE_BYTES", "value": str(cache_budget(spec.pretrain.resources.ephemeral_storage))})


STAGES: tuple[StageRecord, ...] = (
    StageRecord(
        "collect", parts=lambda spec: spec.collect.workers, section=lambda spec: spec.collect,
        image=_driver_image, resources=lambda spec: spec.collect.resources, retry_per_part=True,
        env=_subscription_key_env,
    ),
    # The model's input, derived once from the record (jobs/shards): CPU pods, one per collect worker.
    StageRecord(
        "shards", parts=lambda spec: spec.collect.workers, section=_training_input,
        image=_driver_image, resources=lambda spec: spec.collect.resources, retry_per_part=True,
    ),
    StageRecord(
        "pretrain", parts=lambda spec: spec.pretrain.nodes, section=lambda spec: spec.pretrain,
        image=lambda spec: spec.image, resources=lambda spec: spec.pretrain.resources,
        gpus=lambda spec: spec.pretrain.gpus_per_node, distributed=True, shared_memory=True,
        env=_shard_cache_env,
    ),
    StageRecord(
        "evaluate", parts=lambda spec: len(spec.evaluate), section=lambda spec: spec.evaluate,
        image=lambda spec: spec.image, resources=lambda spec: spec.evaluate_resources,
        gpus=lambda spec: spec.evaluate_resources.gpus, shared_memory=True,
    ),
    StageRecord(
        "publish", parts=lambda spec: 1 if spec.publish else 0, section=lambda spec: spec.publish,
        image=_driver_image, resources=lambda spec: PUBLISH_RESOURCES,
    ),
)


def named(name: str) -> StageRecord:
    for record in STAGES:
        if record.name == name:
            return record
    raise KeyError(f"no stage {name!r}")
