"""`kind: Study`: one base experiment and its variants, expanded into the experiments that run them.

A study is read, never run itself: `expand` turns it into ordinary Experiments named
`<study>-<variant>` (`-s<seed>` after it when `seeds` is given), each carrying `metadata.study`
(rendered as the seco.dev/study and seco.dev/variant labels) and each validated as a complete
experiment. A variant is the base spec with its `overrides` deep-merged in (mappings merge, any
other value replaces, null removes an optional section) and, with a `matrix`, one combination of
the matrix's values; with both, every variant is crossed with every combination.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator

from secoctl.errors import SpecError, SpecProblem, shown
from secoctl.spec import (
    API_VERSION,
    DnsLabel,
    Experiment,
    ExperimentSpec,
    Model,
    UserLabels,
    VariantName,
    k8s_rules,
    parse_experiment,
    problems_of,
)
from secoctl.spec.models import model_of, unknown_field

KIND = "Study"
SEED_PATH = ("pretrain", "seed")


def _starts_with_a_letter(name: str) -> str:
    if not k8s_rules.DNS1035_LABEL.fullmatch(name):
        raise ValueError(f"{shown(name)} must start with a letter: it begins every variant's experiment name")
    return name


class StudyMetadata(Model):
    name: Annotated[DnsLabel, AfterValidator(_starts_with_a_letter)]
    labels: UserLabels = Field(default_factory=dict, description="Added to every variant's metadata.labels.")


class Variant(Model):
    name: VariantName
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Spec fields by their camelCase names, deep-merged into spec.base."
    )


class StudySpec(Model):
    base: dict[str, Any] = Field(
        default_factory=dict, description="What an Experiment's spec holds: the spec every variant starts from."
    )
    variants: list[Variant] = Field(default_factory=list)
    matrix: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(
        default_factory=dict,
        description="Dotted spec field paths (pretrain.method) to the values each takes; "
        "every combination is a variant, named from its values.",
    )
    seeds: list[int] = Field(default_factory=list, description="Each variant once per seed, as pretrain.seed.")

    @field_validator("variants")
    @classmethod
    def _distinct_variants(cls, variants: list[Variant]) -> list[Variant]:
        names = [variant.name for variant in variants]
        repeated = next((name for name in names if names.count(name) > 1), None)
        if repeated:
            raise ValueError(f"two variants are named {shown(repeated)}")
        return variants

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must not repeat")
        if any(seed < 0 for seed in seeds):
            raise ValueError("seeds are non-negative: each names an experiment (-s<seed>)")
        return seeds


class Study(Model):
    api_version: Literal["seco.dev/v1alpha1"]
    kind: Literal["Study"]
    metadata: StudyMetadata
    spec: StudySpec

    @property
    def name(self) -> str:
        return self.metadata.name


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by their YAML (camelCase) names, the only ones an override may use: a Python name
    (batch_size) beside the base's camelCase one would leave pydantic two values for one field."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def unknown_fields(
    overrides: dict[str, Any], model: type[BaseModel] = ExperimentSpec, path: str = "spec"
) -> list[tuple[str, str]]:
    """(path, message) for each key of `overrides` that is no field of the spec, walking into nested models."""
    found = []
    fields = _fields(model)
    for key, value in overrides.items():
        field_path = f"{path}.{key}"
        if key not in fields:
            found.append((field_path, unknown_field(str(key), model)))
            continue
        inner = model_of(fields[key].annotation)
        if inner is not None and isinstance(value, dict):
            found.extend(unknown_fields(value, inner, field_path))
    return found


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` deep-merged in: mappings merge key by key, any other value replaces."""
    result = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """`{a: {b: value}}` for the path (a, b)."""
    for key in reversed(path):
        value = {key: value}
    return value


def leaf_paths(mapping: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            paths.extend(leaf_paths(value, (*prefix, key)))
        else:
            paths.append((*prefix, key))
    return paths


def _overlaps(first: tuple[str, ...], second: tuple[str, ...]) -> bool:
    shorter = min(len(first), len(second))
    return first[:shorter] == second[:shorter]


def matrix_path_problem(path: tuple[str, ...]) -> tuple[str, str] | None:
    """(field path, why) when a dotted matrix key names no spec field: each part but the last must hold fields."""
    model: type[BaseModel] | None = ExperimentSpec
    for position, key in enumerate(path):
        if model is None:
            return (
                f"spec.{'.'.join(path[:position])}",
                "holds no named fields; a matrix path names fields of mappings, such as pretrain.method",
            )
        fields = _fields(model)
        if key not in fields:
            return f"spec.{'.'.join(path[: position + 1])}", unknown_field(key, model)
        model = model_of(fields[key].annotation)
    return None


def name_part(value: Any, field: str) -> str:
    """A matrix value as it ends a variant's name: lower case, runs of other characters as one '-'."""
    if isinstance(value, bool):
        return field.lower() if value else f"no-{field.lower()}"
    if isinstance(value, (list, tuple)):
        return "-".join(name_part(item, field) for item in value)
    if isinstance(value, dict):
        return "-".join(f"{key}-{name_part(item, key)}" for key, item in value.items())
    return re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")


def combinations(matrix: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides) of every combination of the matrix's values, in the order written."""
    paths = [tuple(key.split(".")) for key in matrix]
    result = []
    for values in itertools.product(*matrix.values()):
        overrides: dict[str, Any] = {}
        for path, value in zip(paths, values):
            overrides = merged(overrides, nested(path, value))
        result.append(("-".join(name_part(value, path[-1]) for path, value in zip(paths, values)), overrides))
    return result


def variants(study: Study, source: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides) of every variant, or a SpecError naming each problem of the study's own sections."""
    spec = study.spec
    where = f"{source}: {study.name}"
    problems = []
    if not spec.variants and not spec.matrix:
        problems.append(SpecProblem(where, "spec", "a Study needs variants, a matrix or both"))
    for key in spec.matrix:
        problem = matrix_path_problem(tuple(key.split(".")))
        if problem:
            problems.append(SpecProblem(f"{where} matrix", *problem))
    if problems:
        raise SpecError(problems)
    seeded = bool(spec.seeds)
    if seeded and SEED_PATH in {path[:2] for path in leaf_paths(spec.base)}:
        problems.append(
            SpecProblem(
                where,
                "spec.base.pretrain.seed",
                "spec.seeds sets each variant's seed; remove it here or remove spec.seeds",
            )
        )
    if seeded and any(tuple(key.split("."))[:2] == SEED_PATH for key in spec.matrix):
        problems.append(SpecProblem(f"{where} matrix", "", "spec.seeds sets pretrain.seed; vary it there"))
    for variant in spec.variants:
        variant_where = f"{where} variant {variant.name}"
        problems.extend(
            SpecProblem(variant_where, path, message) for path, message in unknown_fields(variant.overrides)
        )
        for path in leaf_paths(variant.overrides):
            if any(_overlaps(path, tuple(key.split("."))) for key in spec.matrix):
                problems.append(
                    SpecProblem(
                        variant_where,
                        f"spec.{'.'.join(path)}",
                        "the matrix varies this field; set it in the matrix or in the variant, not both",
                    )
                )
            if seeded and _overlaps(path, SEED_PATH):
                problems.append(
                    SpecProblem(
                        variant_where,
                        f"spec.{'.'.join(path)}",
                        "spec.seeds sets each variant's seed; remove it here or remove spec.seeds",
                    )
                )
    crossed = combinations(spec.matrix) if spec.matrix else [("", {})]
    for combination, varied in crossed:
        if spec.matrix and not combination:
            problems.append(
                SpecProblem(
                    f"{where} matrix",
                    "",
                    f"the combination {shown(varied)} leaves no letter or digit to name its variant",
                )
            )
    listed = [(variant.name, variant.overrides) for variant in spec.variants] or [("", {})]
    result: dict[str, dict[str, Any]] = {}
    for (listed_name, overrides), (combination, varied) in itertools.product(listed, crossed):
        name = "-".join(part for part in (listed_name, combination) if part)
        if name in result:
            problems.append(
                SpecProblem(
                    f"{where} matrix",
                    "",
                    f"two combinations are both named {shown(name)}; "
                    "their values differ only in characters a name cannot hold",
                )
            )
        result[name] = merged(overrides, varied)
    if problems:
        raise SpecError(problems)
    return list(result.items())


def expand(study: Study, source: str) -> list[Experiment]:
    """Every experiment the study runs, or one SpecError naming each problem with its variant and field path.

    A problem every variant has (one in spec.base) is named once, for every variant.
    """
    where = f"{source}: {study.name}"
    named = variants(study, source)
    experiments: list[Experiment] = []
    problems: dict[tuple[str, str], list[str]] = {}  # (path, message) -> the variants that have it
    for name, overrides in named:
        for seed in study.spec.seeds or [None]:
            spec = merged(study.spec.base, overrides)
            if seed is not None:
                spec = merged(spec, nested(SEED_PATH, seed))
            experiment_name = f"{study.name}-{name}" + ("" if seed is None else f"-s{seed}")
            document = {
                "apiVersion": API_VERSION,
                "kind": "Experiment",
                "metadata": {
                    "name": experiment_name,
                    "labels": dict(study.metadata.labels),
                    "study": {"name": study.name, "variant": name},
                },
                "spec": spec,
            }
            try:
                experiments.append(parse_experiment(document, where))
            except SpecError as error:
                for problem in error.problems:
                    variants_with = problems.setdefault((problem.path, problem.message), [])
                    if name not in variants_with:
                        variants_with.append(name)
    if problems:
        raise SpecError(
            [
                SpecProblem(f"{where} {_which(names, len(named))}", path, message)
                for (path, message), names in problems.items()
            ]
        )
    same_publish = _same_publish(experiments, where)
    if same_publish:
        raise SpecError(same_publish)
    return experiments


def _which(names: list[str], variants_in_study: int) -> str:
    if variants_in_study > 1 and len(names) == variants_in_study:
        return "every variant"
    return f"variant{'s' if len(names) > 1 else ''} {', '.join(names)}"


def _same_publish(experiments: list[Experiment], where: str) -> list[SpecProblem]:
    """A published version is immutable: two variants may not publish the same NAME:VERSION."""
    by_target: dict[tuple[str, str], list[str]] = {}
    for experiment in experiments:
        publish = experiment.spec.publish
        if publish is not None:
            by_target.setdefault((publish.name, publish.version), []).append(experiment.name)
    return [
        SpecProblem(
            where,
            "spec.publish",
            f"{', '.join(names)} would all publish {name}:{version}, and a "
            "published version is immutable; give each variant its own publish.name in its overrides, "
            "or leave publish out of spec.base",
        )
        for (name, version), names in by_target.items()
        if len(names) > 1
    ]


def parse_study(document: dict[str, Any], source: str) -> list[Experiment]:
    """The experiments of one Study document, or one SpecError listing every problem."""
    try:
        study = Study.model_validate(document)
    except ValidationError as error:
        raise SpecError(problems_of(error, source)) from None
    return expand(study, source)
