"""The Experiment spec: one declaration that the CLI, the JSON Schema, the renderer and the jobs share.

Defaults reproduce the paper's default run (Mañas et al., ICCV 2021 and its reference code);
field names are camelCase in YAML, as Kubernetes users expect.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from secoctl.errors import SpecError, SpecProblem, UserError, shown
from secoctl.model_card import RGB_BANDS
from secoctl.spec import k8s_rules
from secoctl.spec.models import (
    LITERAL_SECRET_KEYS,
    FieldProblem,
    ImageReference,
    LabelValue,
    Model,
    ObjectName,
    QueueName,
    Resources,
    SecretRef,
    _kubernetes_rule,
    model_of,
    unknown_field,
)
from secoctl.spec.models import Toleration as Toleration
from secoctl.store import CREDENTIALS_IN_URI, storage_problem
from secoctl.weights import published as weights

API_VERSION = "seco.dev/v1alpha1"
KIND = "Experiment"

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Experiment names become Job names plus a stage suffix ("-pretrain") and pod hostnames with an
# index suffix, which must stay within the 63-character DNS label limit.
MAX_NAME_LENGTH = 40

SENTINEL2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
Band = Literal["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]

# Keys that only ever hold a credential: a spec must name a Secret instead of carrying one.
# Label keys render sets on every object: `delete` and the rendezvous Service select by them, so a
# user's value would claim another experiment's objects. tests/test_render.py keeps this in step.
RESERVED_LABEL_PREFIX = "seco.dev/"
RESERVED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/managed-by", "kueue.x-k8s.io/queue-name")
# The study and variant an experiment was expanded from (secoctl.spec.study), from metadata.study alone.
LABEL_STUDY = "seco.dev/study"
LABEL_VARIANT = "seco.dev/variant"
# An experiment's objects are named NAME-SUFFIX: its control objects (render.names) and each stage's
# Job (render.job_name; a distributed stage's Service shares it); none may be one an admin installs
# from manifests/, which apply would take over and delete would remove.
CONTROL_NAME_SUFFIXES = ("-spec", "-driver", "-isolated")
ADMIN_OBJECT_NAMES = ("seco", "seco-batch", "secoctl-user", "gpu-queue", "gpu-cluster-queue", "default-flavor")

# Where a pod keeps its spec mount, scratch, shared memory (render's volumes), software and system: a
# storage claim mounted at or above one would hide it, and one inside it would land on a read-only
# or kernel file system, except under the writable /tmp scratch folder.
POD_PATHS = (
    "/tmp",
    "/etc/secoctl",
    "/dev/shm",
    "/opt/secoctl",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/etc",
    "/dev",
    "/proc",
    "/sys",
    "/run",
    "/var/run",
    "/boot",
    "/root",
)
SCRATCH = "/tmp"
# Query parameters that sign a URL (Azure SAS, S3 presigned) are credentials too.
SIGNATURE_PARAMETERS = re.compile(r"^(sig|signature|x-amz-signature|x-amz-credential)$", re.IGNORECASE)


def _no_credentials_in_uri(value: str | None) -> str | None:
    """A URI or path as the pods will see it, which reaches the ConfigMap: userinfo or signed queries never."""
    if value is None or "://" not in value:
        return value
    parts = urlsplit(value)
    if "@" in parts.netloc:
        raise ValueError(CREDENTIALS_IN_URI)
    signed = [
        key for key, _ in parse_qsl(parts.query) if LITERAL_SECRET_KEYS.search(key) or SIGNATURE_PARAMETERS.match(key)
    ]
    if signed:
        raise ValueError(
            f"the query parameter {shown(signed[0])} is a credential and must not be written into "
            "the URI; name a Secret (storageSecret) instead"
        )
    return value


UriOrPath = Annotated[str, AfterValidator(_no_credentials_in_uri)]


def _dns_label(value: str) -> str:
    if len(value) > MAX_NAME_LENGTH or not DNS1123_LABEL.fullmatch(value):
        raise ValueError(
            f"{shown(value)} is not a DNS-1123 label of at most {MAX_NAME_LENGTH} characters "
            "(lower-case letters, digits and '-', starting and ending with a letter or digit)"
        )
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]


def _resolvable(check: Callable[[str], Any], value: str) -> str:
    """`value` checked by the rule of the stage that will resolve it (secoctl.weights), failing here instead."""
    try:
        check(value)
    except UserError as error:
        raise ValueError(str(error)) from None
    return value


class Collect(Model):
    """Seasonal Sentinel-2 collection (paper section 3.1; reference datasets/seco_downloader.py)."""

    source: Literal["planetary-computer", "stac", "seco-archive"] = "planetary-computer"
    stac_url: UriOrPath = "https://planetarycomputer.microsoft.com/api/stac/v1"
    collection: str = "sentinel-2-l2a"
    archive_path: UriOrPath | None = Field(
        None, description="Folder or URI of an extracted SeCo-100K/1M release (source: seco-archive)."
    )
    locations: int = Field(200_000, ge=1, le=10_000_000)
    timestamps: int = Field(5, ge=2, le=12)
    reference_date: date = Field(
        date(2021, 3, 1),
        description="Latest date of a location's series before its random 0-364 day shift back "
        "(the reference used 'today' minus 4 weeks; a fixed date keeps a spec reproducible).",
    )
    interval_days: int = Field(84, ge=1, le=366, description="Days between timestamps (12 weeks).")
    window_days: float = Field(15.0, gt=0, le=60, description="Search window around each date.")
    max_cloud: float = Field(10.0, ge=0, le=100, description="Scene cloud cover limit, percent.")
    patch_size: int = Field(264, ge=16, le=2048, description="Pixels at 10 m per side.")
    bands: list[Band] = Field(default_factory=lambda: list(SENTINEL2_BANDS), min_length=1)
    cities: int = Field(10_000, ge=1, description="Most populated cities to sample around.")
    sigma_km: float = Field(50.0, gt=0, le=500, description="Gaussian offset around a city.")
    seed: int = 0
    samples_per_shard: int = Field(
        64,
        ge=1,
        le=100_000,
        description="Locations per shard (12 bands × 5 dates × 264² uint16 is ~8 MB a location).",
    )
    workers: int = Field(32, ge=1, le=10_000, description="Parallel pods (Indexed Job completions).")
    in_flight: int = Field(
        16,
        ge=1,
        le=256,
        description="Most locations one worker reads at once; it paces itself "
        "down while the API answers 429, 503 or 504, and back up after.",
    )
    subscription_key_secret: SecretRef | None = Field(
        None,
        description="Secret whose PC_SDK_SUBSCRIPTION_KEY the collect pods (and only they) sign with: "
        "Planetary Computer's higher rate limits. Locally the environment's PC_SDK_SUBSCRIPTION_KEY is used.",
    )
    resources: Resources = Field(default_factory=lambda: Resources(cpu="2", memory="8Gi"))

    @field_validator("bands")
    @classmethod
    def _unique_bands(cls, bands: list[str]) -> list[str]:
        if len(set(bands)) != len(bands):
            raise ValueError("bands must not repeat")
        return bands

    @model_validator(mode="after")
    def _archive_needs_path(self) -> "Collect":
        if self.source == "seco-archive" and not self.archive_path:
            raise ValueError("source 'seco-archive' needs archivePath: the extracted release's folder")
        if self.subscription_key_secret and self.source != "planetary-computer":
            raise ValueError(
                "subscriptionKeySecret signs Planetary Computer's assets; "
                "leave it out, or use source: planetary-computer"
            )
        return self


class Pretrain(Model):
    """MoCo-v2 based pre-training (paper section 3.2; reference models/moco2_module.py)."""

    method: Literal["seco", "moco", "moco-tp"] = "seco"
    backbone: Literal["resnet18", "resnet50"] = "resnet50"
    epochs: int = Field(200, ge=1, le=10_000)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (smoke runs).")
    seed: int = Field(
        0,
        description="Seeds weight init, view choice, data order and augmentation: on the "
        "same hardware and process layout a run repeats itself.",
    )
    batch_size: int = Field(256, ge=2, description="Global batch across every GPU.")
    lr: float = Field(0.03, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    lr_milestones: list[int] = Field(default_factory=lambda: [120, 160])
    queue_size: int = Field(16_384, ge=1)
    temperature: float = Field(0.07, gt=0)
    encoder_momentum: float = Field(0.999, ge=0, lt=1)
    embedding_dim: int = Field(128, ge=1)
    input_size: int = Field(224, ge=32)
    input_bands: list[Band] | Literal["all"] | None = Field(
        None,
        min_length=1,
        description="Collected bands the model reads, in this order; all: every collected band, in Sentinel-2's "
        "order. Default: the paper's RGB, B04, B03, B02 (left out of the stored spec, so RGB specs keep their "
        "fingerprints). Each band is stretched to uint8 as the reference does B04, B03, B02, and by SSL4EO-S12's "
        "mean ± 2σ otherwise (see the README's Input bands).",
    )
    augment_order: Literal["reference", "moco"] = Field(
        "reference",
        description="reference: seco views are jittered, greyed, blurred and flipped whole, then "
        "cropped (the reference's datasets/seco_dataset.py); moco: cropped first, as MoCo-v2 does.",
    )
    bf16: bool = True
    compile: bool = False
    loader_workers: int = Field(
        8,
        ge=0,
        le=64,
        description="Training shards each rank fetches ahead into the node's "
        "cache while the first epoch streams; the loader itself is one thread per GPU.",
    )
    checkpoint_every_steps: int = Field(1000, ge=1)
    nodes: int = Field(1, ge=1, le=1024)
    gpus_per_node: int = Field(8, ge=0, le=16)
    # The default run (200,000 locations) caches its epoch of training shards, 196 GiB, on the node's disk.
    resources: Resources = Field(default_factory=lambda: Resources(cpu="32", memory="200Gi", ephemeral_storage="300Gi"))

    @field_validator("input_bands")
    @classmethod
    def _unique_input_bands(cls, bands: list[str] | str | None) -> list[str] | str | None:
        """The paper's RGB written out is the default itself: the same run, so the same fingerprint."""
        if isinstance(bands, list) and len(set(bands)) != len(bands):
            raise ValueError("inputBands must not repeat")
        return None if bands == list(RGB_BANDS) else bands

    @field_validator("resources")
    @classmethod
    def _gpus_from_gpus_per_node(cls, resources: Resources) -> Resources:
        if resources.gpus:
            raise ValueError("pretrain takes its GPU count from gpusPerNode; remove resources.gpus")
        return resources

    @property
    def world_size(self) -> int:
        return self.nodes * max(self.gpus_per_node, 1)

    @model_validator(mode="after")
    def _batch_divides(self) -> "Pretrain":
        if self.batch_size % self.world_size:
            raise ValueError(
                f"batchSize {self.batch_size} must be divisible by nodes × gpusPerNode "
                f"({self.nodes} × {max(self.gpus_per_node, 1)} = {self.world_size})"
            )
        if self.queue_size % self.batch_size:
            raise ValueError(
                f"queueSize {self.queue_size} must be a multiple of batchSize {self.batch_size} "
                "(the MoCo queue is filled one batch of keys at a time)"
            )
        if any(b <= a for a, b in zip(self.lr_milestones, self.lr_milestones[1:])):
            raise ValueError("lrMilestones must be increasing")
        return self


BUILTIN_BASELINES = ("random", "imagenet")  # jobs/evaluate/backbones.baseline; anything else is published weights


class Evaluation(Model):
    """One downstream protocol of the paper (section 4)."""

    task: Literal["eurosat", "bigearthnet", "oscd"]
    protocol: Literal["linear", "finetune"] | None = Field(
        None, description="Default: linear for eurosat and bigearthnet, finetune for oscd."
    )
    recipe: Literal["paper", "modern", "multispectral"] = Field(
        "paper",
        description="paper: the reference code's inputs, head, training and per-batch metrics "
        "(main_eurosat/main_bigearthnet/main_oscd); modern: the pretrain input's stretch and ImageNet "
        "normalisation, standardised features, pixel-global metrics (see the README's Fidelity section); both "
        "read RGB. multispectral: modern's heads, training and metrics, each model fed every band it was trained "
        "on with its own stretch and normalisation (EuroSAT and OSCD are 13-band L1C, BigEarthNet 12-band L2A).",
    )
    label_fraction: float = Field(1.0, gt=0, le=1)
    epochs: int = Field(100, ge=1)
    data_path: UriOrPath | None = Field(None, description="Where the dataset lives; downloaded if absent.")
    baselines: list[
        Annotated[
            str,
            AfterValidator(
                lambda value: value if value in BUILTIN_BASELINES else _resolvable(weights.WeightsRef.parse, value)
            ),
        ]
    ] = Field(
        default_factory=lambda: ["random", "imagenet"],
        description="'random', 'imagenet' or a published weights name NAME[:VERSION].",
    )

    @model_validator(mode="after")
    def _oscd_has_no_linear_probe(self) -> "Evaluation":
        if self.task == "oscd" and self.protocol == "linear":
            raise ValueError(
                "oscd trains a U-Net decoder on the backbone (paper section 4.3); "
                "use protocol: finetune or leave protocol out"
            )
        if self.task == "eurosat" and self.recipe == "paper" and self.protocol == "finetune":
            raise ValueError(
                "recipe paper only probes EuroSAT linearly (reference main_eurosat.py); "
                "use protocol: linear, or recipe: modern"
            )
        return self

    @property
    def finetunes(self) -> bool:
        return self.protocol == "finetune" or (self.protocol is None and self.task == "oscd")

    @property
    def key(self) -> str:
        """Folder name of this evaluation's results, unique within an experiment."""
        protocol = "finetune" if self.finetunes else "linear"
        recipe = "" if self.recipe == "paper" else f"-{self.recipe}"
        return f"{self.task}-{protocol}-{round(self.label_fraction * 100)}pct{recipe}"


class Publish(Model):
    """Weights to `<storage>/weights/<name>/<version>/`; a published version is immutable."""

    name: Annotated[str, AfterValidator(lambda value: _resolvable(weights.check_name, value))]
    version: Annotated[str, AfterValidator(lambda value: _resolvable(weights.check_version, value))] = "1"
    force: bool = Field(False, description="Replace this version if another run already published it.")


def _tracking_uri(value: str) -> str:
    """An MLflow server's http(s) address as the pods will see it: its token comes from tokenSecret, never the URI."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{shown(value)} is not an http:// or https:// address of an MLflow tracking server")
    if "@" in parts.netloc:
        raise ValueError(
            "credentials must not be written into the URI (user:password@); name a Secret (tokenSecret) instead"
        )
    return _no_credentials_in_uri(value)


def _printable(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{shown(value)} holds a control character (a newline, tab or NUL)")
    return value


class Mlflow(Model):
    """An MLflow tracking server: pretrain, evaluate and publish log one run per experiment to it."""

    uri: Annotated[str, StringConstraints(max_length=2048), AfterValidator(_tracking_uri)] = Field(
        description="The tracking server's http(s) address, e.g. https://mlflow.example.org."
    )
    experiment: Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(_printable)] = Field(
        "secoctl",
        description="MLflow experiment the run goes into; the run is named and tagged "
        "(secoctl.experiment) after metadata.name, its params are the spec, flattened.",
    )
    token_secret: SecretRef | None = Field(
        None,
        description="Secret whose MLFLOW_TRACKING_TOKEN the pretrain, evaluate and publish pods (and only "
        "they) send as a bearer token. Locally the environment's MLFLOW_TRACKING_TOKEN is used.",
    )


class Tracking(Model):
    """Where runs are tracked besides the tree's metrics.jsonl and TensorBoard event files, which are always written."""

    mlflow: Mlflow | None = None


# No image is published under this name yet: the default spec.image and the examples' images are
# placeholders that `apply` to a cluster refuses, naming how to build one (images/README.md).
UNPUBLISHED_REGISTRY = "ghcr.io/secoctl/"


class ExperimentSpec(Model):
    storage: str | None = Field(None, description="fsspec URI of the storage tree (file://, s3://); default: local.")
    storage_secret: SecretRef | None = Field(
        None, description="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for s3:// storage."
    )
    storage_claim: ObjectName | None = Field(
        None, description="PersistentVolumeClaim mounted at a file:// storage path in every pod."
    )
    image: ImageReference = f"{UNPUBLISHED_REGISTRY}secoctl:0.1.0"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "Always",
        description="Of every container. Always resolves the tag at the registry at each pod start; "
        "an image loaded into the nodes' container runtime without a registry (a local build, an air-gapped "
        "cluster) fails to pull that way (ErrImagePull): give IfNotPresent, or Never to run only what the node holds.",
    )
    driver_image: ImageReference | None = Field(None, description="Image of collect and driver pods; default: image.")
    priority_class_name: ObjectName | None = None
    queue_name: QueueName | None = Field(None, description="Kueue LocalQueue: Jobs are created suspended.")
    collect: Collect = Field(default_factory=Collect)
    pretrain: Pretrain = Field(default_factory=Pretrain)
    evaluate: list[Evaluation] = Field(default_factory=list)
    evaluate_resources: Resources = Field(default_factory=lambda: Resources(cpu="8", memory="32Gi", gpus=1))
    publish: Publish | None = None
    tracking: Tracking | None = None

    def input_bands(self) -> list[str]:
        """The bands the model reads, `all` resolved against what collect holds."""
        if self.pretrain.input_bands is None:
            return list(RGB_BANDS)
        if self.pretrain.input_bands == "all":
            return [band for band in SENTINEL2_BANDS if band in self.collect.bands]
        return list(self.pretrain.input_bands)

    @model_validator(mode="after")
    def _input_bands_are_collected(self) -> "ExperimentSpec":
        missing = [band for band in self.input_bands() if band not in self.collect.bands]
        if missing:
            raise FieldProblem(
                "pretrain.inputBands",
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                f"not collected (collect.bands: {', '.join(self.collect.bands)}); add "
                f"{'it' if len(missing) == 1 else 'them'} to collect.bands or remove "
                f"{'it' if len(missing) == 1 else 'them'} here",
            )
        return self

    @model_validator(mode="after")
    def _rgb_recipes_read_rgb(self) -> "ExperimentSpec":
        bands = self.input_bands()
        for index, evaluation in enumerate(self.evaluate):
            if evaluation.recipe != "multispectral" and tuple(bands) != RGB_BANDS:
                raise FieldProblem(
                    f"evaluate[{index}].recipe",
                    f"recipe {evaluation.recipe} feeds B04, B03, B02 "
                    f"but this run reads {len(bands)} bands (pretrain.inputBands); "
                    "use recipe: multispectral",
                )
        return self

    def unpublished_image(self) -> tuple[str, str] | None:
        """(field, image) of the first image that is still the unpublished placeholder."""
        for field, image in (("spec.image", self.image), ("spec.driverImage", self.driver_image)):
            if image and image.startswith(UNPUBLISHED_REGISTRY):
                return field, image
        return None

    @field_validator("storage")
    @classmethod
    def _storage_uri(cls, value: str | None) -> str | None:
        if value is None:
            return value
        problem = storage_problem(value)  # the one rule, for --storage and $SECOCTL_STORAGE too
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _claim_mounts_a_folder_of_its_own(self) -> "ExperimentSpec":
        """The claim is mounted at the file:// storage path in every pod (render._storage_volume)."""
        if self.storage_claim is None:
            return self
        if not (self.storage or "").startswith("file://"):
            raise ValueError("storageClaim is mounted at a file:// storage path; give storage: file:///PATH")
        path = self.storage.removeprefix("file://")
        clash = next(
            (
                used
                for used in POD_PATHS
                if f"{used}/".startswith(f"{path}/") or (used != SCRATCH and path.startswith(f"{used}/"))
            ),
            None,
        )
        if path == "/" or clash:
            raise FieldProblem(
                "storage",
                f"{shown(self.storage)} would be mounted at, over or inside {clash or '/'}, "
                "which the pods use; choose a folder of its own such as file:///data/seco",
            )
        return self


def _label_key(key: str) -> str:
    _kubernetes_rule(k8s_rules.label_key, key, "not a Kubernetes label key [DNS-subdomain prefix/]name:")
    name = key.rpartition("/")[2]
    if key.startswith(RESERVED_LABEL_PREFIX) or key in RESERVED_LABELS:
        raise ValueError("secoctl sets this label on every object it makes; choose a key of your own")
    if LITERAL_SECRET_KEYS.search(name):
        raise ValueError(
            "this key names a credential, and labels are readable by anyone who can list pods; "
            "put credentials in a Secret"
        )
    return key


# Labels a spec's author gives, which secoctl adds to every object it makes.
UserLabels = dict[Annotated[str, AfterValidator(_label_key)], LabelValue]
VARIANT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _variant_name(value: str) -> str:
    if len(value) > MAX_NAME_LENGTH or not VARIANT_NAME.fullmatch(value):
        raise ValueError(
            f"{shown(value)} is not a variant name: at most {MAX_NAME_LENGTH} lower-case letters, digits "
            "and '-', starting and ending with a letter or digit (it ends the experiments' names)"
        )
    return value


VariantName = Annotated[str, AfterValidator(_variant_name)]


class StudyMember(Model):
    """The study and variant an experiment was expanded from; the seco.dev/study and seco.dev/variant labels."""

    name: DnsLabel
    variant: VariantName


class Metadata(Model):
    name: DnsLabel
    labels: UserLabels = Field(
        default_factory=dict,
        description="Added to every object; not under seco.dev/ nor those secoctl sets (app.kubernetes.io/name, "
        "app.kubernetes.io/managed-by, kueue.x-k8s.io/queue-name).",
    )
    # Set by a Study's expansion and kept in the stored spec; left out of the JSON Schema, as an
    # experiment's author writes a Study rather than this.
    study: SkipJsonSchema[StudyMember | None] = None

    @model_validator(mode="after")
    def _study_labels(self) -> "Metadata":
        """The study's labels join the user's here, as every object is labelled from metadata.labels (render);
        they are derived from `study` alone, since the user's own labels may not use seco.dev/ keys."""
        if self.study is not None:
            object.__setattr__(
                self, "labels", {**self.labels, LABEL_STUDY: self.study.name, LABEL_VARIANT: self.study.variant}
            )
        return self

    @field_serializer("labels")
    def _user_labels(self, labels: dict[str, str]) -> dict[str, str]:
        """The labels as written: the study's are stored as `study`, and derived from it again when read."""
        return {key: value for key, value in labels.items() if key not in (LABEL_STUDY, LABEL_VARIANT)}

    @field_validator("name")
    @classmethod
    def _names_a_service(cls, name: str) -> str:
        """NAME-pretrain names the rendezvous Service, whose name is a DNS-1035 label on every server before
        1.36 (RelaxedServiceNameValidation, beta there, lets it start with a digit)."""
        if not k8s_rules.DNS1035_LABEL.fullmatch(name):
            raise ValueError(
                f"{shown(name)} must start with a letter: it names the Service {name}-pretrain, and "
                "Kubernetes before 1.36 refuses a Service name that starts with a digit"
            )
        return name

    @field_validator("name")
    @classmethod
    def _not_an_admin_object(cls, name: str) -> str:
        for suffix in derived_name_suffixes():
            if f"{name}{suffix}" in ADMIN_OBJECT_NAMES:
                raise ValueError(
                    f"{name!r} would name its objects {name}{suffix}, the name of objects an admin "
                    "installs from manifests/; choose another name"
                )
        return name


def derived_name_suffixes() -> tuple[str, ...]:
    from secoctl import stages  # the stage records are made of this module's models, so they load after it

    return (*CONTROL_NAME_SUFFIXES, *(f"-{record.name}" for record in stages.STAGES))


class Experiment(Model):
    api_version: Literal["seco.dev/v1alpha1"]
    kind: Literal["Experiment"]
    metadata: Metadata
    spec: ExperimentSpec = Field(default_factory=ExperimentSpec)

    @property
    def name(self) -> str:
        return self.metadata.name

    def with_storage(self, storage: str, source: str = "--storage") -> "Experiment":
        """This experiment on another storage tree, validated as if the spec had named it."""
        document = self.to_yaml_dict()
        document.setdefault("spec", {})["storage"] = storage
        return parse_experiment(document, source)

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's mark for a mapping's key, which the message names instead
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model whose field `loc` would be, walking Experiment's fields by their camelCase names."""
    model: type[BaseModel] | None = Experiment
    for part in loc:
        if model is None or isinstance(part, int):
            continue  # a list's index: its items are the same model
        fields = {info.alias or name: info for name, info in model.model_fields.items()}
        model = model_of(fields[part].annotation) if part in fields else None
    return model


def _message(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return unknown_field(error["loc"][-1], _model_at(tuple(error["loc"][:-1])))
    if kind == "missing":
        return "required field is missing"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "literal_error":
        return f"{message}; got {shown(error['input'])}"
    return message


def problems_of(error: ValidationError, source: str) -> list[SpecProblem]:
    """One problem per pydantic error, each at its camelCase field path."""
    problems = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if isinstance(item.get("ctx", {}).get("error"), FieldProblem):
            loc += (item["ctx"]["error"].field,)
        problems.append(SpecProblem(source=source, path=_field_path(loc), message=_message(item)))
    return problems


def parse_experiment(document: Any, source: str = "<spec>") -> Experiment:
    if not isinstance(document, dict):
        raise SpecError(
            [
                SpecProblem(
                    source=source, path="", message="a document must be a mapping (apiVersion, kind, metadata, spec)"
                )
            ]
        )
    try:
        return Experiment.model_validate(document)
    except ValidationError as error:
        raise SpecError(problems_of(error, source)) from None


def json_schema() -> dict[str, Any]:
    schema = Experiment.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "secoctl Experiment"
    return schema
