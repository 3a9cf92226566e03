"""The spec's leaf models, which the stage records are built from: a pod's resources, a Secret by name,
names and labels checked by the API server's own rules. They import nothing else of secoctl's spec, so
`secoctl.stages` can use them while the experiment model uses the stages."""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from secoctl.errors import shown
from secoctl.spec import k8s_rules

LITERAL_SECRET_KEYS = re.compile(
    r"(access_?key|secret_?key|secret_?access_?key|session_?token|password|token|api_?key|credentials?)$",
    re.IGNORECASE,
)


def _kubernetes_rule(rule: Callable[[str], list[str]], value: str, what: str | None = None) -> str:
    """`value` if the API server's own rule (secoctl.spec.k8s_rules) takes it; else its problems, as one line."""
    problems = rule(value)
    if problems:
        raise ValueError(f"{what or shown(value)} {'; '.join(problems)}")
    return value


# Names of objects the spec refers to (Secrets, claims, PriorityClasses), by the server's rule for them.
ObjectName = Annotated[str, AfterValidator(lambda value: _kubernetes_rule(k8s_rules.dns1123_subdomain, value))]
ImageReference = Annotated[str, AfterValidator(lambda value: _kubernetes_rule(k8s_rules.image_reference, value))]
NodeLabelKey = Annotated[str, AfterValidator(lambda key: _kubernetes_rule(k8s_rules.label_key, key, "label key"))]
LabelValue = Annotated[
    str, AfterValidator(lambda value: _kubernetes_rule(k8s_rules.label_value, value, f"label value {shown(value)}"))
]
# A LocalQueue's name, which the driver also writes as the Jobs' kueue.x-k8s.io/queue-name label value.
QueueName = Annotated[ObjectName, AfterValidator(lambda value: _kubernetes_rule(k8s_rules.label_value, value))]


class FieldProblem(ValueError):
    """A model validator's problem that belongs to one of the model's fields: its path names that field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (through Optional and Annotated), or None for a scalar, list or free mapping."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, dict):
        return None
    return next((model for model in map(model_of, typing.get_args(annotation)) if model is not None), None)


def unknown_field(key: object, model: type[BaseModel] | None) -> str:
    """The message for `key`, no field of `model`: the field it is most likely a misspelling of, if any."""
    camel = [info.alias or name for name, info in model.model_fields.items()] if model is not None else []
    close = difflib.get_close_matches(str(key), camel, n=1, cutoff=0.6)
    if close and close[0] != str(key):  # the same name: a field of another model (the path is what is wrong)
        return f"unknown field; did you mean {close[0]!r}?"
    return "unknown field; remove it or check its spelling (see `secoctl schema`)"


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Model(BaseModel):
    """Strict camelCase model: unknown fields are errors, never silently dropped. No text field holds a
    control character: a URL, a collection or a name reaches logs, tables and terminals, where an escape
    sequence would act and a newline would forge a line."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        if isinstance(value, str) and CONTROL_CHARACTERS.search(value):
            raise ValueError(
                f"{shown(value)} holds a control character (an escape, a newline, a tab or NUL); remove it"
            )
        return value


class SecretRef(Model):
    """A Kubernetes Secret by name; locally its keys are read from the environment instead."""

    secret_name: ObjectName

    @model_validator(mode="before")
    @classmethod
    def _no_literal_credentials(cls, data: Any) -> Any:
        if isinstance(data, dict):
            literal = [k for k in data if k not in ("secretName", "secret_name")]
            if any(LITERAL_SECRET_KEYS.search(str(k)) for k in literal):
                raise ValueError(
                    "credentials must not be written into the spec; create a Secret "
                    "(kubectl create secret generic NAME --from-literal=...) and give "
                    "{secretName: NAME}"
                )
        return data


class Toleration(Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    @model_validator(mode="after")
    def _as_the_server_checks_it(self) -> "Toleration":
        problems = k8s_rules.toleration(self.key, self.operator, self.value)
        if problems:
            first = problems[0][0]
            raise FieldProblem(
                first, "; ".join(problem if field == first else f"{field}: {problem}" for field, problem in problems)
            )
        return self


class Resources(Model):
    """What one pod of a stage asks the scheduler for."""

    cpu: str = "4"
    memory: str = "16Gi"
    gpus: int = Field(0, ge=0, le=16)
    ephemeral_storage: str = Field(
        "20Gi",
        description="Local disk of one pod: requested from the scheduler and the size of its /tmp "
        "(downloads, caches; evaluate downloads its datasets there unless dataPath is set); a pod that "
        "writes more is evicted.",
    )
    node_selector: dict[NodeLabelKey, LabelValue] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)

    @field_validator("cpu", "memory", "ephemeral_storage")
    @classmethod
    def _quantity(cls, value: str) -> str:
        return _kubernetes_rule(k8s_rules.request_quantity, value)
