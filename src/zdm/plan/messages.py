"""Plain-words messages for pydantic's validation errors.

pydantic says "Input should be a valid dictionary or instance of AddCheck"; a person editing a
YAML file needs "expected a mapping, got the string 'users'". Every error type the plan models
can raise is rewritten here, with the location that best points at the mistake.
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from zdm.plan.changes import CHANGE_KINDS
from zdm.plan.errors import PlanValueError, describe
from zdm.plan.model import CHANGE_KIND_ERROR, STEP_KIND_ERROR
from zdm.plan.steps import STEP_KINDS

Loc = tuple[Any, ...]
At = Literal["value", "key", "parent"]


_PLAIN_KEY = re.compile(r"[^.\[\]'\s]+")


@dataclass(frozen=True)
class Finding:
    """A problem at a path of the plan, before it is given a file position."""

    loc: Loc
    message: str
    at: At = "value"
    """Report at the value, at its key (unknown keys), or at the enclosing mapping (missing)."""
    shown: Loc | None = None
    """The path to print, when it differs from ``loc`` (a key that is not a string)."""

    @property
    def path(self) -> str:
        """The path as messages print it."""
        return format_path(self.loc if self.shown is None else self.shown)


def format_path(loc: Loc) -> str:
    """``("phases", "cleanup", 1, "add_check")`` -> ``"phases.cleanup[1].add_check"``."""
    path = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            path += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.fullmatch(part):
            path += f".{part}" if path else part
        else:
            path += f"[{part!r}]"
    return path


def _suggest(word: Any, options: list[str]) -> str:
    if not isinstance(word, str):
        return ""
    same_letters = [option for option in options if option.lower() == word.lower()]
    close = same_letters or difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _strip(tp: Any) -> Any:
    """Remove ``Annotated`` and ``| None`` so the remaining type can be navigated."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _descend(tp: Any, part: Any) -> Any:
    tp = _strip(tp)
    origin = get_origin(tp)
    if origin is list and isinstance(part, int):
        return get_args(tp)[0]
    if origin is dict:
        return get_args(tp)[1]
    if origin in (Union, types.UnionType):
        if not isinstance(part, str):
            return None
        members = [_strip(arg) for arg in get_args(tp)]
        for kind in (STEP_KINDS.get(part), CHANGE_KINDS.get(part)):
            if kind is not None and kind in members:
                return kind
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, info in tp.model_fields.items():
            if (info.alias or name) == part:
                return info.annotation
    return None


def model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model that validates the mapping at ``loc``, if the path leads to one."""
    tp: Any = root
    for part in loc:
        tp = _descend(tp, part)
        if tp is None:
            return None
    tp = _strip(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def keys_of(model: type[BaseModel]) -> list[str]:
    """The YAML keys a model accepts, in declaration order."""
    return [info.alias or name for name, info in model.model_fields.items()]


def _step_kind_message(value: Any, what: str = "step", registry: Any = STEP_KINDS) -> str:
    kinds = list(registry)
    known = "known kinds: " + ", ".join(kinds)
    example = "add_column" if what == "step" else "alter_column"
    if not isinstance(value, dict):
        return (
            f"expected a {what}: a mapping with one key naming its kind, such as {example}; "
            f"got {describe(value)}; {known}"
        )
    if not value:
        return f"empty {what}; expected one key naming its kind; {known}"
    if len(value) > 1:
        keys = ", ".join(str(key) for key in value)
        hint = ""
        if any(key in registry for key in value):
            hint = f" (indent the {what}'s fields under its kind)"
        return (
            f"a {what} is a mapping with exactly one key, its kind; got {len(value)} keys: "
            f"{keys}{hint}; {known}"
        )
    (key,) = value
    if not isinstance(key, str):
        return f"expected a {what} kind as key, got {describe(key)}; {known}"
    return f"unknown {what} kind {key!r}{_suggest(key, kinds)}; {known}"


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "float_type": "a number",
    "float_parsing": "a number",
    "list_type": "a list",
    "dict_type": "a mapping",
}


def _bound(error: ErrorDetails, word: str, key: str) -> str:
    ctx = error.get("ctx", {})
    return f"expected a number {word} {ctx.get(key)}, got {describe(error['input'])}"


def translate(error: ErrorDetails, root: type[BaseModel]) -> Finding:
    """Rewrite one pydantic error as a finding with a plain message and the right place."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    value = error["input"]
    ctx = error.get("ctx", {})
    key_error = bool(loc) and loc[-1] == "[key]"
    if key_error:
        loc = loc[:-1]
    if kind == "invalid_key" and loc and loc[-1] == str(value):
        loc = (*loc[:-1], value)  # pydantic puts str(key) in the path; find the real key
    shown = (*loc[:-1], str(loc[-1])) if (key_error or kind == "invalid_key") and loc else None

    at: At = "key" if key_error else "value"
    message: str
    if kind == "missing":
        message, at = f"missing required field {loc[-1]!r}", "parent"
        if loc == ("phases",):
            message += " (or 'changes')"
    elif kind == "extra_forbidden":
        model = model_at(root, loc[:-1])
        keys = keys_of(model) if model else []
        message = f"unknown key {loc[-1]!r}"
        if keys:
            message += f"{_suggest(loc[-1], keys)}; expected one of: {', '.join(keys)}"
        at = "key"
    elif kind == "invalid_key":
        message, at = f"expected a string as key, got {describe(value)}", "key"
    elif kind == STEP_KIND_ERROR:
        message = _step_kind_message(value)
    elif kind == CHANGE_KIND_ERROR:
        message = _step_kind_message(value, "change", CHANGE_KINDS)
    elif kind in ("model_type", "model_attributes_type"):
        model = model_at(root, loc)
        fields = f" (keys: {', '.join(keys_of(model))})" if model else ""
        message = f"expected a mapping{fields}, got {describe(value)}"
    elif kind == "literal_error" and loc == ("version",):
        message = f"unsupported plan version {value!r}; this zdm reads version 1"
        if not isinstance(value, int):
            message = f"expected the plan format version 1, got {describe(value)}"
    elif kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        message = f"expected {ctx.get('expected')}, got {describe(value)}"
        message += _suggest(value, options)
    elif kind in _TYPE_NAMES:
        message = f"expected {_TYPE_NAMES[kind]}, got {describe(value)}"
    elif kind == "too_short":
        noun = "entry" if ctx.get("field_type") == "Dictionary" else "item"
        message = f"expected at least {ctx.get('min_length')} {noun}, got none"
        if ctx.get("actual_length"):
            message = f"expected at least {ctx.get('min_length')} {noun}s"
    elif kind == "string_too_short":
        message = "expected a non-empty string"
    elif kind == "greater_than_equal":
        message = _bound(error, ">=", "ge")
    elif kind == "greater_than":
        message = _bound(error, ">", "gt")
    elif kind == "less_than_equal":
        message = _bound(error, "<=", "le")
    elif kind == "less_than":
        message = _bound(error, "<", "lt")
    elif kind == "value_error":
        cause = ctx.get("error")
        message = str(cause) if cause is not None else error["msg"]
        if isinstance(cause, PlanValueError) and cause.field is not None:
            loc = (*loc, cause.field)
    else:
        message = error["msg"]
    if key_error:
        message = f"invalid key {loc[-1]!r}: {message}"
    return Finding(loc, message, at, shown)
