"""Checks of a plan against the live schema, for `zdm validate --dsn`."""

from __future__ import annotations

from typing import Any

import psycopg

from zdm.ddl import Table
from zdm.plan import (
    AddColumn,
    Backfill,
    CreateTable,
    DropTable,
    DualWrite,
    LoadedPlan,
    RenameColumn,
    RenameTable,
)


def live_schema_problems(conn: psycopg.Connection[Any], loaded: LoadedPlan) -> list[str]:
    """Tables a step names that neither exist nor are created earlier; columns likewise."""
    plan = loaded.plan
    problems: list[str] = []
    created: set[Table] = set()
    added: set[tuple[Table, str]] = set()

    def table_ok(t: Table) -> bool:
        if t in created:
            return True
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [t.ident().as_string(conn)]
        ).fetchone()
        return bool(row and row[0])

    def column_ok(t: Table, col: str) -> bool:
        if (t, col) in added or t in created:
            return True
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s"
            " AND NOT attisdropped)",
            [t.ident().as_string(conn), col],
        ).fetchone()
        return bool(row and row[0])

    for step in plan.steps():
        spec = step.spec
        name = getattr(spec, "table", None)
        if not isinstance(name, str):
            continue
        table = Table.parse(name, plan.schema_)
        if isinstance(spec, CreateTable):
            created.add(table)
            continue
        if isinstance(spec, DropTable):
            continue
        if not table_ok(table):
            problems.append(f"{step.key} {step.kind}: table {table} does not exist")
            continue
        if isinstance(spec, RenameTable):
            created.add(table.sibling(spec.to))
        elif isinstance(spec, AddColumn):
            added.add((table, spec.column.name))
        elif isinstance(spec, RenameColumn):
            added.add((table, spec.to))
        columns: list[str] = []
        if isinstance(spec, DualWrite | Backfill) and spec.set:
            columns = list(spec.set)
        for attr in ("column",):
            value = getattr(spec, attr, None)
            if isinstance(value, str):
                columns.append(value)
        for col in columns:
            if not column_ok(table, col):
                problems.append(f"{step.key} {step.kind}: column {col} does not exist in {table}")
    return problems
