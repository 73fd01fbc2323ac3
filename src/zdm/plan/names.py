"""PostgreSQL identifiers as plans write them: bare names, or ``schema.name`` for relations."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

#: PostgreSQL truncates longer identifiers silently (NAMEDATALEN - 1), so two long names
#: could become one object; plans reject them instead.
MAX_IDENTIFIER_BYTES = 63


def _check_part(part: str, what: str) -> None:
    if not part:
        raise ValueError(f"expected a {what}, got an empty name")
    if len(part) > 1 and part[0] == part[-1] == '"':
        raise ValueError(
            f"write names without SQL quotes: {part} is the {what} {part[1:-1]}"
            " (zdm quotes every name itself)"
        )
    if "\x00" in part:
        raise ValueError(f"a {what} cannot contain a NUL character")
    size = len(part.encode("utf-8", "surrogatepass"))
    if size > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"{part[:20]!r}... is {size} bytes long; PostgreSQL names are at most "
            f"{MAX_IDENTIFIER_BYTES} bytes"
        )


def check_name(value: str) -> str:
    """Accept one identifier: a column, constraint, trigger or new index name."""
    if "." in value:
        raise ValueError(f"expected a bare name without a schema or table prefix, got {value!r}")
    _check_part(value, "name")
    return value


def check_qualified_name(value: str) -> str:
    """Accept ``name`` or ``schema.name`` (tables, existing indexes)."""
    parts = value.split(".")
    if len(parts) > 2:
        raise ValueError(f"expected name or schema.name, got {value!r}")
    for part in parts:
        _check_part(part, "name")
    return value


def split_qualified(value: str, default_schema: str) -> tuple[str, str]:
    """``"s.t"`` -> ``("s", "t")``; ``"t"`` -> ``(default_schema, "t")``."""
    schema, _, name = value.rpartition(".")
    return (schema or default_schema, name)


def bare_name(value: str) -> str:
    """The last part of a possibly schema-qualified name."""
    return value.rpartition(".")[2]


def truncate_identifier(value: str) -> str:
    """Cut ``value`` to PostgreSQL's identifier length without splitting a UTF-8 character."""
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_IDENTIFIER_BYTES:
        return value
    return encoded[:MAX_IDENTIFIER_BYTES].decode("utf-8", "ignore")


Name = Annotated[
    str,
    AfterValidator(check_name),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": r"^[^.]+$"}),
]
"""One identifier (at most 63 bytes): column, constraint, trigger or new index."""

QualifiedName = Annotated[
    str,
    AfterValidator(check_qualified_name),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": r"^[^.]+(\.[^.]+)?$"}),
]
"""``name`` or ``schema.name``; unqualified names live in the plan's ``schema``."""


def _check_sql(value: str) -> str:
    if not value.strip():
        raise ValueError("expected SQL text, got an empty string")
    return value


SqlText = Annotated[
    str,
    AfterValidator(_check_sql),
    WithJsonSchema({"type": "string", "minLength": 1}),
]
"""Raw SQL from the plan (an expression, a type, a query); zdm passes it through as written."""
