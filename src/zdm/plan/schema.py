"""The JSON Schema of plan files, for editors; generated from the same models that validate."""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
from typing import Any

from pydantic import BaseModel

from zdm.plan.durations import DURATION_PATTERN, format_duration
from zdm.plan.model import PHASES, Plan

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a plan file, as ``zdm schema`` prints it."""
    schema = Plan.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Any] = schema["$defs"]
    for model in _models(Plan):
        target = schema if model is Plan else definitions.get(model.__name__)
        if target is not None:
            _describe_fields(model, target)
    _share_step_schema(definitions)
    for definition in definitions.values():
        _spell_duration_defaults(definition)
    return {"$schema": JSON_SCHEMA_DIALECT, **schema, "title": "zdm plan"}


def _models(model: type[BaseModel], seen: list[type[BaseModel]] | None = None) -> list[Any]:
    """``model`` and every model its fields use, however deeply (step kinds included)."""
    seen = [] if seen is None else seen
    if model in seen:
        return seen
    seen.append(model)
    for info in model.model_fields.values():
        for inner in _classes(info.annotation):
            _models(inner, seen)
    return seen


def _classes(annotation: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [found for arg in typing.get_args(annotation) for found in _classes(arg)]


def field_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """The docstring under each field of ``model`` (and of its plan-model bases), by field name.

    Read from the source only when a schema is asked for: pydantic's ``use_attribute_docstrings``
    would read it for every model at import, which every command would pay for.
    """
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for statement, following in itertools.pairwise(body):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _describe_fields(model: type[BaseModel], definition: dict[str, Any]) -> None:
    properties = definition.get("properties", {})
    for name, doc in field_docstrings(model).items():
        info = model.model_fields.get(name)
        key = (info.alias or name) if info is not None else name
        if key in properties and info is not None and info.description is None:
            properties[key]["description"] = doc


def _share_step_schema(definitions: dict[str, Any]) -> None:
    """Define the one-key step mapping once instead of once per phase."""
    phases = definitions["Phases"]["properties"]
    definitions["Step"] = phases[PHASES[0]]["items"]
    for phase in PHASES:
        phases[phase]["items"] = {"$ref": "#/$defs/Step"}


def _is_duration(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("pattern") == DURATION_PATTERN:
        return True
    return any(_is_duration(member) for member in schema.get("anyOf", []))


def _spell_duration_defaults(definition: dict[str, Any]) -> None:
    """Show defaults as plans write them (``200ms``): a bare 200 would be rejected in a file."""
    for prop in definition.get("properties", {}).values():
        default = prop.get("default")
        if _is_duration(prop) and isinstance(default, int) and default:
            prop["default"] = format_duration(default)
