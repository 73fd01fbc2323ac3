"""What an ``ADD COLUMN`` asks of existing rows: default, NOT NULL, generated values."""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast, enums

from zdm.lint.analysis import deparse, func_name, walk
from zdm.lint.types import SERIAL_TYPES, type_ref
from zdm.lint.volatility import NON_VOLATILE_FUNCTIONS, VOLATILE_FUNCTIONS

CT = enums.ConstrType


@dataclass(frozen=True)
class NewColumn:
    """An added column, as the statement defines it."""

    name: str
    type_name: str
    serial: bool
    not_null: bool
    default: ast.Node | None
    identity: bool
    generated_stored: bool

    @property
    def gets_values(self) -> bool:
        """Existing rows get a value from the column definition itself."""
        return self.default is not None or self.serial or self.identity or self.generated_stored


def new_column(definition: ast.ColumnDef) -> NewColumn:
    not_null = bool(definition.is_not_null)
    default = definition.raw_default
    identity = generated = False
    for con in definition.constraints or ():
        if not isinstance(con, ast.Constraint):
            continue
        if con.contype in (CT.CONSTR_NOTNULL, CT.CONSTR_PRIMARY):
            not_null = True
        elif con.contype is CT.CONSTR_DEFAULT:
            default = con.raw_expr
        elif con.contype is CT.CONSTR_IDENTITY:
            identity = True
        elif con.contype is CT.CONSTR_GENERATED:
            generated = (getattr(con, "generated_kind", "s") or "s") != "v"
    type_ = type_ref(definition.typeName) if definition.typeName is not None else None
    type_name = deparse(definition.typeName) if definition.typeName is not None else ""
    return NewColumn(
        definition.colname or "",
        type_name,
        bool(type_ and type_.name in SERIAL_TYPES),
        not_null,
        default,
        identity,
        generated,
    )


def volatility(expr: ast.Node) -> tuple[list[str], list[str]]:
    """(volatile functions, functions of unknown volatility) an expression calls."""
    volatile: list[str] = []
    unknown: list[str] = []
    for node in walk(expr):
        if isinstance(node, ast.FuncCall):
            name = func_name(node)
            if name in VOLATILE_FUNCTIONS:
                volatile.append(name)
            elif name not in NON_VOLATILE_FUNCTIONS:
                unknown.append(name)
    return volatile, unknown
