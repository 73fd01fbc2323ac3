"""Column types as the parser gives them, and which type changes rewrite a table.

``ALTER COLUMN ... TYPE`` rewrites the table and rebuilds its indexes under ACCESS EXCLUSIVE,
except where PostgreSQL can prove the stored bytes stay valid: a longer ``varchar``, ``varchar``
to ``text``, a wider ``numeric`` of the same scale, ``cidr`` to ``inet``, a wider ``bit varying``,
a finer timestamp/time/interval precision, and (PostgreSQL 12+) ``timestamp`` to and from
``timestamptz`` when the session's TimeZone is UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pglast import ast

_ALIASES = {
    "int": "int4",
    "integer": "int4",
    "smallint": "int2",
    "bigint": "int8",
    "serial4": "serial",
    "serial8": "bigserial",
    "serial2": "smallserial",
    "boolean": "bool",
    "decimal": "numeric",
    "float": "float8",
    "real": "float4",
    "character varying": "varchar",
    "character": "bpchar",
    "char": "bpchar",
    "bit varying": "varbit",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
    "time with time zone": "timetz",
}

SERIAL_TYPES = frozenset({"serial", "bigserial", "smallserial"})

_PRECISION_TYPES = frozenset({"timestamp", "timestamptz", "time", "timetz", "interval"})
"""Types whose typmod is a fractional-seconds precision: a finer one is binary compatible."""

#: Target types for which some other type converts without a rewrite.
MAYBE_CHEAP_TARGETS = frozenset({"varchar", "text", "numeric", "varbit", "inet", *_PRECISION_TYPES})


@dataclass(frozen=True)
class TypeRef:
    """A column type: canonical name (``int4``, ``varchar``…), integer modifiers, array or not."""

    name: str
    mods: tuple[int, ...] = ()
    array: bool = False

    def __str__(self) -> str:
        text = self.name + (f"({', '.join(map(str, self.mods))})" if self.mods else "")
        return text + ("[]" if self.array else "")


def canonical_name(name: str) -> str:
    lowered = name.lower()
    return _ALIASES.get(lowered, lowered)


def type_ref(node: ast.TypeName) -> TypeRef:
    """The TypeRef of a parsed type name."""
    from pglast import ast

    names = [n.sval for n in node.names or () if isinstance(n, ast.String) and n.sval]
    if len(names) > 1 and names[0] == "pg_catalog":
        names = names[1:]
    name = canonical_name(".".join(names))
    mods: list[int] = []
    for mod in node.typmods or ():
        if isinstance(mod, ast.A_Const) and isinstance(mod.val, ast.Integer):
            mods.append(mod.val.ival or 0)
    return TypeRef(name, tuple(mods), bool(node.arrayBounds))


class Rewrite(Enum):
    """Whether changing a column from one type to another rewrites the table."""

    NO = "no"
    YES = "yes"
    ONLY_IN_UTC = "only when TimeZone is not UTC"


def type_change(old: TypeRef, new: TypeRef) -> Rewrite:
    """What ``ALTER COLUMN ... TYPE new`` does to a column of type ``old`` (no USING clause)."""
    if old == new:
        return Rewrite.NO
    if old.array or new.array:
        return Rewrite.YES
    if old.name in ("varchar", "text") and new.name == "text":
        return Rewrite.NO
    if old.name in ("varchar", "text") and new.name == "varchar" and not new.mods:
        return Rewrite.NO
    if old.name == new.name == "varchar" and old.mods and new.mods[:1] >= old.mods[:1]:
        return Rewrite.NO
    if old.name == new.name == "varbit" and (not new.mods or (old.mods and new.mods >= old.mods)):
        return Rewrite.NO
    if old.name == new.name == "numeric":
        if not new.mods:
            return Rewrite.NO
        if old.mods:
            old_scale = old.mods[1] if len(old.mods) > 1 else 0
            new_scale = new.mods[1] if len(new.mods) > 1 else 0
            if new_scale == old_scale and new.mods[0] >= old.mods[0]:
                return Rewrite.NO
        return Rewrite.YES
    if old.name == "cidr" and new.name == "inet" and not new.mods:
        return Rewrite.NO
    if old.name == new.name and old.name in _PRECISION_TYPES:
        if old.name == "interval":
            return Rewrite.YES  # interval typmods also carry field restrictions
        if not new.mods or (old.mods and new.mods[0] >= old.mods[0]):
            return Rewrite.NO
        return Rewrite.YES
    if {old.name, new.name} == {"timestamp", "timestamptz"} and (
        not new.mods or (old.mods and new.mods[0] >= old.mods[0])
    ):
        return Rewrite.ONLY_IN_UTC
    return Rewrite.YES
