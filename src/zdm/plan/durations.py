"""Durations: plans write them with a unit (``500ms``, ``2s``, ``5m``); code uses milliseconds."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, ValidationInfo, WithJsonSchema

from zdm.plan.errors import describe

#: Context key set while validating a plan file: there a bare number is ambiguous, so only
#: ``0`` may go without a unit. Code (and ``model_dump`` round trips) may pass milliseconds.
PLAN_FILE_CONTEXT = "zdm_plan_file"

DURATION_PATTERN = r"^(0|[0-9]+(\.[0-9]+)?(ms|s|m|h))$"
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_EXPECTED = "expected a duration with a unit such as 500ms, 2s or 5m"
#: PostgreSQL keeps timeouts in a 32-bit count of milliseconds (about 24 days).
MAX_DURATION_MS = 2_147_483_647


def parse_duration(text: str) -> int:
    """Return the milliseconds of ``text`` (``"1.5s"`` -> 1500); raise ValueError otherwise."""
    if text == "0":
        return 0
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{_EXPECTED}, got {describe(text)}")
    number, unit = match.groups()
    ms = Decimal(number) * _UNIT_MS[unit]
    if ms != ms.to_integral_value():
        raise ValueError(f"{_EXPECTED}, in whole milliseconds; got {text!r}")
    if ms > MAX_DURATION_MS:
        raise ValueError(f"duration {text!r} is too long; the limit is about 24 days (596h)")
    return int(ms)


def format_duration(ms: int) -> str:
    """The shortest exact spelling of ``ms`` in the plan syntax, for dry-run output and logs."""
    if ms == 0:
        return "0"
    for unit in ("h", "m", "s"):
        if ms % _UNIT_MS[unit] == 0:
            return f"{ms // _UNIT_MS[unit]}{unit}"
    return f"{ms}ms"


def _validate_duration(value: Any, info: ValidationInfo) -> int:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int) and not isinstance(value, bool):
        from_file = isinstance(info.context, dict) and info.context.get(PLAN_FILE_CONTEXT)
        if value == 0 or (0 < value <= MAX_DURATION_MS and not from_file):
            return value
        if value > 0 and from_file:
            raise ValueError(f"{_EXPECTED}, got the bare number {value} (write {value}ms?)")
    raise ValueError(f"{_EXPECTED}, got {describe(value)}")


Duration = Annotated[
    int,
    PlainValidator(_validate_duration),
    # JSON (and so YAML) dumps use the plan syntax, which validates again from a file.
    PlainSerializer(lambda ms: format_duration(ms) if ms else 0, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "integer", "const": 0},
            ],
            "description": "A duration with a unit: 500ms, 2s, 5m, 1h; or 0.",
        }
    ),
]
"""Milliseconds, validated from ``"500ms"``, ``"2s"``, ``"5m"``, ``"1h"``, ``"1.5s"`` or ``0``."""
