"""The JSON Schema of plan files, for editors; generated from the same models that validate."""

from __future__ import annotations

from typing import Any

from zdm.plan.durations import DURATION_PATTERN, format_duration
from zdm.plan.model import PHASES, Plan

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a plan file, as ``zdm schema`` prints it."""
    schema = Plan.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Any] = schema["$defs"]
    _share_step_schema(definitions)
    for definition in definitions.values():
        _spell_duration_defaults(definition)
    return {"$schema": JSON_SCHEMA_DIALECT, **schema, "title": "zdm plan"}


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
