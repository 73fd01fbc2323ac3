"""YAML reading that remembers where every value came from.

PyYAML's loaders forget positions and silently keep the last of two equal keys. This module
composes the node tree, builds plain Python data from it, and records the line and column of
every value and key by its path (``("phases", "cleanup", 1, "add_check", "check")``), so a
validation error found later can be reported at its place in the file.

Scalars follow the YAML 1.2 core schema, not PyYAML's YAML 1.1 one: ``on``, ``yes`` and ``no``
stay strings (``from: {on: ...}`` is a backfill key, not ``True``), ``2024-01-01`` stays a
string, and ``010`` is ten.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Loc = tuple[Any, ...]
Position = tuple[int, int]
"""1-based line and column."""

#: Aliases can make a small file expand exponentially ("billion laughs"); stop well before.
MAX_VALUES = 100_000

#: Python refuses to convert longer digit strings (sys.int_info.default_max_str_digits).
_MAX_DIGITS = 4000

_TAG = "tag:yaml.org,2002:"
_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = re.compile(r"true|True|TRUE|false|False|FALSE")
_INT = re.compile(r"[-+]?[0-9]+(?:_[0-9]+)*|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)


class _CoreSchemaLoader(yaml.SafeLoader):
    """SafeLoader's reader, parser and composer with YAML 1.2 core-schema scalar resolution."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}  # noqa: RUF012


for _tag, _pattern, _first in (
    ("bool", _BOOL, "tTfF"),
    ("int", _INT, "-+0123456789"),
    ("float", _FLOAT, "-+0123456789."),
):
    _CoreSchemaLoader.add_implicit_resolver(
        _TAG + _tag, re.compile(f"^(?:{_pattern.pattern})$"), list(_first)
    )
_CoreSchemaLoader.add_implicit_resolver(
    _TAG + "null", re.compile(f"^(?:{_NULL.pattern})$"), ["~", "n", "N", ""]
)


class YamlSyntaxError(Exception):
    """The text is not YAML; carries the position of the problem when PyYAML knows it."""

    def __init__(self, message: str, position: Position | None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


@dataclass
class YamlIssue:
    """A problem found while building the data (duplicate key, unsupported tag)."""

    loc: Loc
    message: str
    position: Position | None = None
    """Where to report it; by default, where ``loc`` is written."""


@dataclass
class YamlDocument:
    """Data of a YAML document plus the position of each value and key by its path."""

    data: Any
    values: dict[Loc, Position] = field(default_factory=dict)
    keys: dict[Loc, Position] = field(default_factory=dict)
    issues: list[YamlIssue] = field(default_factory=list)

    def position(self, loc: Loc, *, at_key: bool = False) -> Position | None:
        """Where ``loc`` is written; the nearest enclosing value when it is not in the file."""
        if at_key and loc in self.keys:
            return self.keys[loc]
        while True:
            if loc in self.values:
                return self.values[loc]
            if not loc:
                return None
            loc = loc[:-1]


class _TooLarge(Exception):
    pass


def _position(node: Node) -> Position:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1)


class _Builder:
    """Turns composed nodes into dicts, lists and scalars, recording positions on the way."""

    def __init__(self, document: YamlDocument) -> None:
        self.document = document
        self.count = 0
        self.active: set[int] = set()

    def build(self, node: Node, loc: Loc) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _TooLarge
        self.document.values.setdefault(loc, _position(node))
        if isinstance(node, ScalarNode):
            return self.scalar(node, loc)
        if id(node) in self.active:
            self.document.issues.append(YamlIssue(loc, "an alias refers to a value containing it"))
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self.check_tag(node, "seq", loc)
                return [self.build(item, (*loc, index)) for index, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                self.check_tag(node, "map", loc)
                return self.mapping(node, loc)
        finally:
            self.active.discard(id(node))
        raise AssertionError(f"unknown YAML node {node!r}")  # pragma: no cover

    def mapping(self, node: MappingNode, loc: Loc) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                message = f"a key must be a plain value, not a {_kind(key_node)}"
                self.document.issues.append(YamlIssue(loc, message, _position(key_node)))
                continue
            key = self.scalar(key_node, loc)
            key_loc = (*loc, key)
            if key in result:
                first = self.document.keys[key_loc]
                message = f"duplicate key {key!r} (first on line {first[0]}); keys must be unique"
                self.document.issues.append(YamlIssue(key_loc, message, _position(key_node)))
                continue
            self.document.keys[key_loc] = _position(key_node)
            result[key] = self.build(value_node, key_loc)
        return result

    def check_tag(self, node: Node, expected: str, loc: Loc) -> None:
        if node.tag != _TAG + expected:
            message = f"unsupported YAML tag {_show_tag(node.tag)}; write a plain {_kind(node)}"
            self.document.issues.append(YamlIssue(loc, message, _position(node)))

    def scalar(self, node: ScalarNode, loc: Loc) -> Any:
        tag, text = node.tag, node.value
        if tag == _TAG + "str":
            return text
        if tag == _TAG + "null" and _NULL.fullmatch(text):
            return None
        if tag == _TAG + "bool" and _BOOL.fullmatch(text):
            return text.lower() == "true"
        if tag == _TAG + "int" and _INT.fullmatch(text) and len(text) <= _MAX_DIGITS:
            if text.startswith(("0o", "0x")):
                return int(text[2:], 8 if text[1] == "o" else 16)
            return int(text.replace("_", ""))
        if tag == _TAG + "float" and _FLOAT.fullmatch(text):
            lowered = text.lower()
            if lowered.endswith((".inf", ".nan")):
                sign = -1.0 if lowered.startswith("-") else 1.0
                return math.nan if lowered.endswith("nan") else sign * math.inf
            return float(text)
        if tag.startswith(_TAG) and tag.removeprefix(_TAG) in ("null", "bool", "int", "float"):
            shown = text if len(text) <= 40 else text[:37] + "..."
            message = f"{shown!r} is not a valid {_show_tag(tag)}"
        else:
            message = f"unsupported YAML tag {_show_tag(tag)}; write a plain value"
        self.document.issues.append(YamlIssue(loc, message, _position(node)))
        return text


def _show_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


def _kind(node: Node) -> str:
    return "list" if isinstance(node, SequenceNode) else "mapping"


def _syntax_error(error: yaml.YAMLError, text: str) -> YamlSyntaxError:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "invalid YAML"
        if error.context and error.problem:
            problem = f"{problem} ({error.context})"
        position = (mark.line + 1, mark.column + 1) if mark else None
        return YamlSyntaxError(f"invalid YAML: {problem}", position)
    if isinstance(error, yaml.reader.ReaderError):
        offset = min(error.position, len(text))
        line = text.count("\n", 0, offset) + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        code = error.character if isinstance(error.character, int) else ord(error.character)
        message = f"invalid YAML: character U+{code:04X} is not allowed in YAML text"
        return YamlSyntaxError(message, (line, column))
    return YamlSyntaxError(f"invalid YAML: {error}", None)


def read_yaml(text: str) -> YamlDocument:
    """Parse one YAML document; raise YamlSyntaxError when the text is not YAML."""
    try:
        loader = _CoreSchemaLoader(text)  # the reader checks every character here
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise _syntax_error(error, text) from error
    except RecursionError as error:
        raise YamlSyntaxError("invalid YAML: nested too deeply", None) from error
    document = YamlDocument(data=None)
    if node is None:
        return document
    try:
        document.data = _Builder(document).build(node, ())
    except _TooLarge:
        raise YamlSyntaxError(
            f"the document expands to more than {MAX_VALUES} values (through aliases)",
            _position(node),
        ) from None
    except RecursionError as error:
        raise YamlSyntaxError("invalid YAML: nested too deeply", None) from error
    return document
