"""YAML documents with every key a mapping repeats, which PyYAML alone would drop (the last one wins).

Read within bounds: the event stream is scanned before any node is composed, as composing recurses
once per level (libyaml's composer overflows the C stack at some 100,000 levels) and each alias
stands for its anchor's whole subtree (nine levels of nine aliases is 9^9 values in 1.3 KB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from secoctl.errors import shown

# libyaml parses the same language several times faster; the pure-Python loader stands in without it.
Loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
MERGE_TAG = "tag:yaml.org,2002:merge"

# A spec is six levels deep at most (spec.collect.resources.tolerations[0].key) and a few hundred
# values long; these leave room for any real one and bound the work on any other.
MAX_DEPTH = 32
MAX_ALIASES = 100
MAX_VALUES = 100_000


class LimitExceeded(Exception):
    """A YAML stream beyond the bounds above, at the field path and line where it crossed them."""

    def __init__(self, path: str, line: int, message: str):
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{path}: line {line}: {message}")


@dataclass(frozen=True)
class DuplicateKey:
    path: str
    key: str
    first_line: int
    line: int

    @property
    def message(self) -> str:
        return f"duplicate key {shown(self.key)} (line {self.first_line} and line {self.line}); keep one"


@dataclass(frozen=True)
class Document:
    data: Any
    duplicate_keys: list[DuplicateKey]


def read_documents(text: str) -> list[Document]:
    """Every document of a YAML stream, each with its repeated keys.

    yaml.YAMLError where it is not YAML; LimitExceeded, before any node is built, where it nests
    deeper than MAX_DEPTH, uses more than MAX_ALIASES aliases or expands to more than MAX_VALUES values.
    """
    check_limits(text)
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


@dataclass
class _Open:
    """A sequence or mapping whose end event has not come yet."""

    path: str
    anchor: str | None
    values_before: int  # the stream's expanded value count when it started
    is_mapping: bool
    expects_key: bool = True
    key: str = "?"
    index: int = 0


def check_limits(text: str) -> None:
    """Refuses a stream beyond the bounds, in one pass over its events with no node built.

    Every value counts once where it is written and once more wherever an alias repeats it, so the
    running count is the size of what constructing the documents would build, known before it is built.
    """
    expanded_size: dict[str, int] = {}  # an anchor's subtree, aliases within it expanded
    open_nodes: list[_Open] = []
    values = aliases = 0
    for event in yaml.parse(text, Loader=Loader):
        if isinstance(event, yaml.DocumentStartEvent):
            expanded_size.clear()  # anchors are local to their document
        if not isinstance(event, (yaml.NodeEvent, yaml.CollectionEndEvent)):
            continue
        line = event.start_mark.line + 1
        if isinstance(event, yaml.CollectionEndEvent):
            closed = open_nodes.pop()
            if closed.anchor is not None:
                expanded_size[closed.anchor] = values - closed.values_before
            _advance(open_nodes)
            continue
        parent = open_nodes[-1] if open_nodes else None
        path = _path_of_next(parent)
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise LimitExceeded(path, line, f"more than {MAX_ALIASES} aliases; write the values out instead")
            if any(node.anchor == event.anchor for node in open_nodes):
                raise LimitExceeded(
                    path, line, f"alias *{event.anchor} repeats a node that contains it; a spec cannot refer to itself"
                )
            values += expanded_size.get(event.anchor, 1)  # an undefined alias is the composer's to report
        else:
            values += 1
        if values > MAX_VALUES:
            raise LimitExceeded(
                path,
                line,
                f"more than {MAX_VALUES} values, an alias counting its anchor's "
                "again; a spec needs a few hundred: write out only those",
            )
        if parent is not None and parent.is_mapping and parent.expects_key:
            parent.key = event.value if isinstance(event, yaml.ScalarEvent) else "?"
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_nodes) == MAX_DEPTH:
                raise LimitExceeded(path, line, f"nested deeper than {MAX_DEPTH} levels; a spec needs at most six")
            open_nodes.append(_Open(path, event.anchor, values - 1, isinstance(event, yaml.MappingStartEvent)))
        else:
            if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
                expanded_size[event.anchor] = 1
            _advance(open_nodes)


def _path_of_next(parent: _Open | None) -> str:
    if parent is None:
        return ""
    if not parent.is_mapping:
        return f"{parent.path}[{parent.index}]"
    return parent.path if parent.expects_key or parent.key == "<<" else _child(parent.path, parent.key)


def _advance(open_nodes: list[_Open]) -> None:
    """A node of the innermost open collection is complete: its next one is the following key, value or item."""
    if not open_nodes:
        return
    parent = open_nodes[-1]
    if parent.is_mapping:
        parent.expects_key = not parent.expects_key
    else:
        parent.index += 1


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
