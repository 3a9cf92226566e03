"""YAML documents with every key a mapping repeats, which PyYAML alone would drop (the last one wins)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

# libyaml parses the same language several times faster; the pure-Python loader stands in without it.
Loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class DuplicateKey:
    path: str
    key: str
    first_line: int
    line: int

    @property
    def message(self) -> str:
        return f"duplicate key {self.key!r} (line {self.first_line} and line {self.line}); keep one"


@dataclass(frozen=True)
class Document:
    data: Any
    duplicate_keys: list[DuplicateKey]


def read_documents(text: str) -> list[Document]:
    """Every document of a YAML stream, each with its repeated keys; yaml.YAMLError where it is not YAML."""
    loader = Loader(text)
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            # The walk comes first: constructing a mapping applies its merge keys to the node in place.
            repeated = duplicate_keys(node)
            documents.append(Document(loader.construct_document(node), repeated))
        return documents
    finally:
        loader.dispose()


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def duplicate_keys(root: yaml.Node) -> list[DuplicateKey]:
    """Keys written twice in one mapping, in reading order, each at its field path (`spec.pretrain.epochs`).

    Mappings are seen as written, before merges: a key that `<<: *defaults` provides and the mapping
    also gives is an override, as YAML means it. Each node is visited once, at its anchor, so aliases
    neither repeat the work nor loop.
    """
    found: list[DuplicateKey] = []
    visited: set[int] = set()
    pending: list[tuple[yaml.Node, str]] = [(root, "")]
    while pending:
        node, path = pending.pop()
        if isinstance(node, yaml.ScalarNode) or id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            children = [(item, f"{path}[{position}]") for position, item in enumerate(node.value)]
        else:
            children = []
            first_lines: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue  # an unhashable key, which constructing the document refuses
                name, line = key.value, key.start_mark.line + 1
                if (key.tag, name) in first_lines:
                    found.append(DuplicateKey(_child(path, name), name, first_lines[key.tag, name], line))
                else:
                    first_lines[key.tag, name] = line
                children.append((value, path if key.tag == MERGE_TAG else _child(path, name)))
        # Depth first in document order, so an anchor is reached before any alias to it.
        pending.extend(reversed(children))
    return sorted(found, key=lambda duplicate: duplicate.line)
