"""The README's spec reference, generated from the Experiment model so the two cannot drift.

Types and descriptions come from the JSON Schema; defaults from the models themselves, because the
schema leaves out every `default_factory` default, and a nested object's fields take their default
from the object's own default (collect.resources is `Resources(cpu="2", memory="8Gi")`, not
`Resources()`). `python -m secoctl.spec.reference --write README.md` replaces the text between the
reference markers; a test fails when the README is out of date.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from secoctl.spec import Experiment, json_schema

PIPE = "\\|"  # a literal | inside a Markdown table cell
START, END = "<!-- spec-reference:start -->", "<!-- spec-reference:end -->"


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return defs[node["$ref"].split("/")[-1]]
    return node


def _type(node: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in node:
        return node["$ref"].split("/")[-1]
    if "enum" in node:
        return " \\| ".join(json.dumps(v) for v in node["enum"])
    if "const" in node:
        return json.dumps(node["const"])
    if "anyOf" in node:
        return " \\| ".join(_type(option, defs) for option in node["anyOf"])
    if node.get("type") == "array":
        return f"list[{_type(node.get('items', {}), defs)}]"
    if node.get("type") == "object" and "additionalProperties" in node:
        return f"map[{_type(node['additionalProperties'], defs)}]"
    return str(node.get("type", "any"))


def _object(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema a field holds (directly, optionally, or as list items), if any."""
    candidates = [node] + node.get("anyOf", []) + ([node["items"]] if "items" in node else [])
    for candidate in candidates:
        resolved = _resolve(candidate, defs)
        if resolved.get("properties"):
            return resolved
        if "items" in candidate and _resolve(candidate["items"], defs).get("properties"):
            return _resolve(candidate["items"], defs)
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (directly, optionally, or as list items), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_model_in, get_args(annotation))), None)


def _default(field: FieldInfo, enclosing: Any) -> Any:
    """The field's default as JSON: from the enclosing object's own default when it has one."""
    if isinstance(enclosing, dict):
        return enclosing[field.alias]
    value = field.get_default(call_default_factory=True)
    return TypeAdapter(field.annotation).dump_python(value, mode="json", by_alias=True)


def rows(schema: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    defs = schema.get("$defs", {})
    found: list[tuple[str, str, str, str]] = []

    def walk(node: dict[str, Any], prefix: str, model: type[BaseModel], enclosing: Any) -> None:
        fields = {field.alias: field for field in model.model_fields.values()}
        for name, field in node.get("properties", {}).items():
            path = f"{prefix}{name}"
            is_list = field.get("type") == "array" or any(o.get("type") == "array" for o in field.get("anyOf", []))
            info, inner = fields[name], _object(field, defs)
            required = info.is_required() and enclosing is None
            value = None if required else _default(info, enclosing)
            if required:
                default = "required"
            elif inner is not None and isinstance(value, dict):
                default = ""  # the rows of its fields below give it
            else:
                default = json.dumps(value)
            description = " ".join((field.get("description") or _resolve(field, defs).get("description") or "").split())
            found.append((path, _type(field, defs), default, description))
            if inner is not None:
                walk(
                    inner,
                    f"{path}[]." if is_list else f"{path}.",
                    _model_in(info.annotation),
                    value if isinstance(value, dict) else None,
                )

    walk(schema, "", Experiment, None)
    return found


def markdown() -> str:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for path, kind, default, description in rows(json_schema()):
        default, description = (text.replace("|", PIPE) for text in (default, description))
        lines.append(f"| `{path}` | {kind} | {default} | {description} |")
    return "\n".join(lines) + "\n"


def replace_section(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{markdown()}{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m secoctl.spec.reference")
    parser.add_argument("--write", type=Path, help="README to update in place; prints the table otherwise")
    args = parser.parse_args()
    if args.write is None:
        print(markdown(), end="")
        return
    args.write.write_text(replace_section(args.write.read_text()))


if __name__ == "__main__":
    main()
