"""The stages of an experiment, one record each, in the order they run.

Plan, render, the driver, `status`, `logs` and the spec's name checks read these records and
nothing else about a stage (as TorchX's schedulers read an AppDef's `Role`s), so adding a stage is
adding a record here and its `jobs/<name>` package. Each rule is a function of the spec; render
turns a record into a pod template, the local executor into processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from secoctl.model_card import FEATURES, RGB_BANDS
from secoctl.spec.models import Resources, SecretRef
from secoctl.spec.quantity import cache_budget

if TYPE_CHECKING:
    from secoctl.spec import ExperimentSpec, Pretrain

DRIVER = "driver"  # the driver Job's stage label: status and logs show it beside the stages
SUBSCRIPTION_KEY = "PC_SDK_SUBSCRIPTION_KEY"  # planetary_computer's setting, read by jobs/collect/signing.py
TRACKING_TOKEN = (
    "MLFLOW_TRACKING_TOKEN"  # the MLflow client's bearer token, read by mlflow itself (jobs/common/tracking.py)
)
PUBLISH_RESOURCES = Resources(cpu="1", memory="4Gi")
SHARD_CACHE = (
    "/tmp/training-shards"  # on the pod's /tmp emptyDir (its local disk), read by jobs/pretrain/shard_cache.py
)

# Stopping a pretrain pod (SIGTERM: Kueue preemption, a node drain, a spot reclaim). jobs/pretrain/train.py
# reads the loss back once per window of PRETRAIN_WINDOW_STEPS steps, and there its ranks agree whether to
# stop; a stopping run finishes the window, writes one checkpoint and exits 143.
PRETRAIN_WINDOW_STEPS = 10
# torchvision's ResNets without fc: parameters plus BatchNorm buffers, and multiply-accumulates at 224 px
# (its weights' meta "_ops"). tests/pretrain/test_stop_on_sigterm.py checks both against torchvision.
BACKBONE_TENSOR_ELEMENTS = {"resnet18": 11_176_512 + 9_620, "resnet50": 23_508_032 + 53_173}
BACKBONE_GMACS_224 = {"resnet18": 1.814, "resnet50": 4.089}
# Both ResNets' stem: 64 filters of 7 × 7 over the input bands, 112² outputs at 224 px. Each band past
# torchvision's 3 adds this many weights and multiply-accumulates.
STEM_ELEMENTS_PER_BAND = 64 * 7 * 7
STEM_GMACS_224_PER_BAND = 112 * 112 * STEM_ELEMENTS_PER_BAND / 1e9
# Conservative rates, so the estimate errs long: a slow GPU's effective fp32 training rate, a CPU pod's,
# and one stream writing to object storage or a network volume.
GPU_FLOP_PER_S = 5e12
CPU_FLOP_PER_S = 5e10
CHECKPOINT_WRITE_BYTES_PER_S = 50e6
ARCHIVE_BYTES = 2**20
STOP_SLACK_S = 20  # the estimate's own error, the ranks' gather of RNG states, torch.save's copy
EXIT_S = 10  # after the workers: torchrun's exit and the log wrapper's last flush to storage


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


def _kubernetes_default(spec: ExperimentSpec) -> None:
    return None


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
    # The pod's terminationGracePeriodSeconds: how long its part may take to stop on SIGTERM; None: 30 s.
    stop_grace_s: Callable[[ExperimentSpec], int | None] = _kubernetes_default
    # Fields of its section that never change its result: what a pod asks the scheduler for, the
    # credentials it signs with.
    not_inputs: frozenset[str] = frozenset({"resources"})
    # Its output is a dataset every experiment with the same fingerprint reads, at
    # `<storage>/datasets/<name>-<fingerprint>` (secoctl.stored.stage_tree), run once under a claim (secoctl.claim).
    shared: bool = False

    @property
    def module(self) -> str:
        return f"jobs.{self.name}"

    def inputs(self, spec: ExperimentSpec) -> Any:
        """What it computes from, as its fingerprint covers it: the fields its section sets away from their
        defaults. A field at its default is left out, so a release that adds a field (whose default keeps the
        old behaviour) leaves every finished stage finished instead of refusing it as changed."""
        section = self.section(spec)
        if isinstance(section, dict):  # a stage's own derived settings, already plain
            return section
        if isinstance(section, list):
            return [item.model_dump(mode="json", by_alias=True, exclude_defaults=True) for item in section]
        if section is None:
            return None
        return section.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude=set(self.not_inputs))


def _driver_image(spec: ExperimentSpec) -> str:
    """The small image (no torch) where a stage needs none."""
    return spec.driver_image or spec.image


def _secret_key_env(key: str, secret: SecretRef | None) -> tuple[dict[str, Any], ...]:
    """That one key of the Secret as the variable of its name, not the whole Secret."""
    return ({"name": key, "valueFrom": {"secretKeyRef": {"name": secret.secret_name, "key": key}}},) if secret else ()


def _subscription_key_env(spec: ExperimentSpec) -> tuple[dict[str, Any], ...]:
    """For the collect pods only: the rest never sign a URL."""
    return _secret_key_env(SUBSCRIPTION_KEY, spec.collect.subscription_key_secret)


def _tracking_token_env(spec: ExperimentSpec) -> tuple[dict[str, Any], ...]:
    """For the pods that log to MLflow only (pretrain, evaluate, publish)."""
    mlflow = spec.tracking.mlflow if spec.tracking else None
    return _secret_key_env(TRACKING_TOKEN, mlflow.token_secret if mlflow else None)


def _training_input(spec: ExperimentSpec) -> dict[str, Any]:
    """What the training-shards stage derives from the record: the model's bands, stretched to uint8 (each
    band's stretch is fixed by its name, secoctl.model_card.stretch)."""
    return {"bands": spec.input_bands(), "encoding": "uint8"}


def _shard_cache_env(spec: ExperimentSpec) -> tuple[dict[str, Any], ...]:
    """Each pretrain node caches the training shards it reads on its /tmp volume (sized by ephemeralStorage)."""
    return (
        {"name": "SECOCTL_SHARD_CACHE", "value": SHARD_CACHE},
        {"name": "SECOCTL_SHARD_CACHE_BYTES", "value": str(cache_budget(spec.pretrain.resources.ephemeral_storage))},
    )


def _subspaces(pretrain: Pretrain) -> int:
    """SeCo contrasts three key views, each in its own embedding sub-space; MoCo one (jobs/pretrain/seco.py)."""
    return 3 if pretrain.method == "seco" else 1


def pretrain_checkpoint_bytes(pretrain: Pretrain, bands: int = len(RGB_BANDS)) -> int:
    """fp32 query and key encoders with their heads, SGD's momentum for the query side, the queues, and
    ARCHIVE_BYTES of torch.save's records, the ranks' RNG states and the metrics (whose growth over a
    long run STOP_SLACK_S covers)."""
    features = FEATURES[pretrain.backbone]
    heads = _subspaces(pretrain) * (
        features * features + features + features * pretrain.embedding_dim + pretrain.embedding_dim
    )
    stem = STEM_ELEMENTS_PER_BAND * (bands - len(RGB_BANDS))
    encoder = BACKBONE_TENSOR_ELEMENTS[pretrain.backbone] + stem + heads
    return 4 * (3 * encoder + _subspaces(pretrain) * pretrain.embedding_dim * pretrain.queue_size) + ARCHIVE_BYTES


def pretrain_step_s(pretrain: Pretrain, bands: int = len(RGB_BANDS)) -> float:
    """One rank's step at a conservative rate: the query's forward and backward (3 passes), each key's forward."""
    gmacs = BACKBONE_GMACS_224[pretrain.backbone] + STEM_GMACS_224_PER_BAND * (bands - len(RGB_BANDS))
    flop_per_sample = 2e9 * gmacs * (pretrain.input_size / 224) ** 2
    flop = flop_per_sample * (3 + _subspaces(pretrain)) * pretrain.batch_size / pretrain.world_size
    return flop / (GPU_FLOP_PER_S if pretrain.gpus_per_node else CPU_FLOP_PER_S)


def pretrain_stop_s(spec: ExperimentSpec) -> int:
    """How long a pretrain worker may take from SIGTERM to its exit: the rest of its window, one checkpoint, slack."""
    pretrain, bands = spec.pretrain, len(spec.input_bands())
    return (
        math.ceil(
            PRETRAIN_WINDOW_STEPS * pretrain_step_s(pretrain, bands)
            + pretrain_checkpoint_bytes(pretrain, bands) / CHECKPOINT_WRITE_BYTES_PER_S
        )
        + STOP_SLACK_S
    )


def _pretrain_env(spec: ExperimentSpec) -> tuple[dict[str, Any], ...]:
    """The shard cache, torchrun's wait for its stopping workers before it kills them (30 s by default), the
    tracking token."""
    return (
        *_shard_cache_env(spec),
        {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": str(pretrain_stop_s(spec))},
        *_tracking_token_env(spec),
    )


STAGES: tuple[StageRecord, ...] = (
    StageRecord(
        "collect",
        parts=lambda spec: spec.collect.workers,
        section=lambda spec: spec.collect,
        image=_driver_image,
        resources=lambda spec: spec.collect.resources,
        retry_per_part=True,
        env=_subscription_key_env,
        shared=True,
        # in_flight paces the requests; the outcomes are committed in the locations' order whatever it is.
        not_inputs=frozenset({"resources", "subscription_key_secret", "in_flight"}),
    ),
    # The model's input, derived once from the record (jobs/shards): CPU pods, one per collect worker.
    StageRecord(
        "shards",
        parts=lambda spec: spec.collect.workers,
        section=_training_input,
        image=_driver_image,
        resources=lambda spec: spec.collect.resources,
        retry_per_part=True,
        shared=True,
    ),
    StageRecord(
        "pretrain",
        parts=lambda spec: spec.pretrain.nodes,
        section=lambda spec: spec.pretrain,
        image=lambda spec: spec.image,
        resources=lambda spec: spec.pretrain.resources,
        gpus=lambda spec: spec.pretrain.gpus_per_node,
        distributed=True,
        shared_memory=True,
        env=_pretrain_env,
        stop_grace_s=lambda spec: pretrain_stop_s(spec) + EXIT_S,
    ),
    StageRecord(
        "evaluate",
        parts=lambda spec: len(spec.evaluate),
        section=lambda spec: spec.evaluate,
        image=lambda spec: spec.image,
        resources=lambda spec: spec.evaluate_resources,
        gpus=lambda spec: spec.evaluate_resources.gpus,
        shared_memory=True,
        env=_tracking_token_env,
    ),
    StageRecord(
        "publish",
        parts=lambda spec: 1 if spec.publish else 0,
        section=lambda spec: spec.publish,
        image=_driver_image,
        resources=lambda spec: PUBLISH_RESOURCES,
        env=_tracking_token_env,
    ),
)


def named(name: str) -> StageRecord:
    for record in STAGES:
        if record.name == name:
            return record
    raise KeyError(f"no stage {name!r}")
