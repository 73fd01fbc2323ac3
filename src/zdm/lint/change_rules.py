"""Rules about the options of high-level ``changes``: plans that expand and run, but whose
cleanup (or backfill) fails on rows the change did not say how to bring into line."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from zdm.lint.findings import Severity
from zdm.plan.changes import AddColumnChange, AlterColumn, ChangeSpec, DropColumnChange


@dataclass(frozen=True)
class ChangeProblem:
    field: str
    """The change's field the finding points at."""
    message: str
    fix: str


@dataclass(frozen=True)
class ChangeRule:
    """A rule over one change; examples are plan files (YAML)."""

    id: str
    severity: Severity
    summary: str
    check: Callable[[ChangeSpec], Iterator[ChangeProblem]]
    bad: tuple[str, ...]
    good: tuple[str, ...]


def _plan(change: str) -> str:
    return f"version: 1\nchanges:\n  - {change}\n"


def _not_null_without_up(change: ChangeSpec) -> Iterator[ChangeProblem]:
    if isinstance(change, AlterColumn) and change.nullable is False and change.up is None:
        yield ChangeProblem(
            "nullable",
            f"{change.column} is made NOT NULL in cleanup; a row that is NULL then (legacy "
            "data, or an old writer's) makes the validation fail",
            "give `up` (e.g. COALESCE(col, default)): the change then fills a copy column "
            "for every row and writer, and swaps it in",
        )


def _constraint_without_up(change: ChangeSpec) -> Iterator[ChangeProblem]:
    if not isinstance(change, AlterColumn) or change.up is not None:
        return
    for field in ("unique", "check", "references"):
        if getattr(change, field) is not None:
            yield ChangeProblem(
                field,
                f"the {field} constraint is added to {change.column} in cleanup and validated "
                "over every row; a row that violates it makes the step fail",
                "give `up` to bring old values into line (through a copy column), or check "
                "the data first with a `verify` step",
            )


# Targets every usual source type casts to (integer -> bigint, the key swap; anything -> text).
_ALWAYS_CASTS = {"bigint", "int8", "text"}


def _type_without_up(change: ChangeSpec) -> Iterator[ChangeProblem]:
    if not isinstance(change, AlterColumn) or change.type is None or change.up is not None:
        return
    if change.type.strip().lower() not in _ALWAYS_CASTS:
        yield ChangeProblem(
            "type",
            f"without `up`, a copy of {change.column} is filled with CAST({change.column} AS "
            f"{change.type}); one value that does not cast fails the backfill (a type "
            "PostgreSQL changes without a rewrite needs no `up`)",
            "give `up`, an expression that converts every old value (NULLIF, CASE, ...)",
        )


def _drop_without_down(change: ChangeSpec) -> Iterator[ChangeProblem]:
    if isinstance(change, DropColumnChange) and change.down is None:
        yield ChangeProblem(
            "column",
            f"until cleanup the old version still reads {change.column}; rows the new version "
            "inserts leave it to its default or NULL, and a NOT NULL column without a default "
            "refuses them",
            "give `down`, the value the old version should see for the new version's rows",
        )


def _add_not_null_without_up(change: ChangeSpec) -> Iterator[ChangeProblem]:
    if not isinstance(change, AddColumnChange):
        return
    column = change.column
    if not column.nullable and change.up is None:
        yield ChangeProblem(
            "column",
            f"{column.name} is added NOT NULL with a constant default: every existing row and "
            "every old writer's row gets that constant",
            "give `up` if existing rows should get a value computed from their columns",
        )


CHANGE_RULES: tuple[ChangeRule, ...] = (
    ChangeRule(
        "change-not-null-without-up",
        Severity.warning,
        "alter_column makes a column NOT NULL without `up` for the rows that are NULL",
        _not_null_without_up,
        (_plan("alter_column: {table: t, column: c, nullable: false}"),),
        (_plan("alter_column: {table: t, column: c, nullable: false, up: 'coalesce(c, 0)'}"),),
    ),
    ChangeRule(
        "change-constraint-without-up",
        Severity.warning,
        "alter_column adds a constraint without `up` for the rows that violate it",
        _constraint_without_up,
        (_plan("alter_column: {table: t, column: c, check: {name: k, constraint: c > 0}}"),),
        (
            _plan(
                "alter_column: {table: t, column: c, check: {name: k, constraint: c > 0},"
                " up: 'greatest(c, 1)', down: c}"
            ),
        ),
    ),
    ChangeRule(
        "change-type-without-up",
        Severity.warning,
        "alter_column changes a type without `up`: the backfill casts every value",
        _type_without_up,
        (_plan("alter_column: {table: t, column: c, type: integer, down: 'c::text'}"),),
        (
            _plan(
                "alter_column: {table: t, column: c, type: integer,"
                " up: \"nullif(c, '')::integer\", down: 'c::text'}"
            ),
        ),
    ),
    ChangeRule(
        "drop-column-without-down",
        Severity.warning,
        "drop_column without `down`: the old version reads the column until cleanup",
        _drop_without_down,
        (_plan("drop_column: {table: t, column: c}"),),
        (_plan("drop_column: {table: t, column: c, down: \"''\"}"),),
    ),
    ChangeRule(
        "add-column-constant-not-null",
        Severity.warning,
        "add_column NOT NULL fills every existing row with its constant default",
        _add_not_null_without_up,
        (
            _plan(
                "add_column: {table: t, column: {name: c, type: int, nullable: false, default: '0'}}"
            ),
        ),
        (
            _plan(
                "add_column: {table: t, column: {name: c, type: int, nullable: false,"
                " default: '0'}, up: 'a + b'}"
            ),
        ),
    ),
)

CHANGE_RULE_IDS = frozenset(rule.id for rule in CHANGE_RULES)
