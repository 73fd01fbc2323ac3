"""`zdm validate --dsn --scan`: the rows a plan's mappings cannot convert, found in advance.

Each mapping (a `dual_write`'s `set` and `reverse`, a `backfill`'s own `set`) is evaluated on
every row of its live table, key range by key range, and stored into an empty temporary table
whose one column has the target column's type: the same assignment (cast, length check) the
trigger and the backfill make. The live table is only read; every batch is a short transaction
of its own, rolled back. A batch that fails is halved until the failing rows are alone, as the
backfill does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors, sql

from zdm.ddl import Table, user_sql
from zdm.engine.backfill import Key, find_key, upper_bound_sql
from zdm.plan import AddColumn, Backfill, CreateTable, DualWrite, LoadedPlan
from zdm.plan.messages import format_path
from zdm.plan.model import PlanStep

DATA_ERRORS = (errors.DataError, errors.IntegrityError)
SCAN_BATCH = 10_000
SAMPLE = 10
SCAN_TABLE = "zdm_scan"


@dataclass
class Scanned:
    """One mapping's scan: rows read, the failing rows' keys (a sample) and their count."""

    path: str
    table: str
    column: str
    rows: int = 0
    bad: int = 0
    sample: list[str] = field(default_factory=list)
    first_error: str | None = None
    skipped: str | None = None
    """Why the mapping was not scanned (no such table yet, no key, a join, …)."""
    stopped: bool = False
    """Every row of a batch failed: the scan of this mapping stopped there."""

    def line(self) -> str:
        where = f"{self.path} ({self.table}.{self.column})"
        if self.skipped:
            return f"{where}: not scanned: {self.skipped}"
        if not self.bad:
            return f"{where}: {self.rows} rows, all convert"
        more = ", …" if self.bad > len(self.sample) else ""
        stop = "; stopped: every row of a batch fails" if self.stopped else ""
        return (
            f"{where}: {self.bad} of {self.rows} rows cannot be converted: "
            f"{', '.join(self.sample)}{more}; first error: {self.first_error}{stop}"
        )


def scan_mappings(
    conn: psycopg.Connection[Any], loaded: LoadedPlan, batch: int = SCAN_BATCH
) -> list[Scanned]:
    """Every mapping of the plan, evaluated on its table's rows (see the module)."""
    schema = loaded.plan.schema_
    added = _added_types(loaded)
    out = []
    for step, loc, table_name, column, expr in _mappings(loaded.steps()):
        table = Table.parse(table_name, schema)
        scanned = Scanned(format_path(loc), str(table), column)
        out.append(scanned)
        key = find_key(conn, table)
        if key is None:
            scanned.skipped = "the table does not exist yet"
            continue
        if key.ctid:
            scanned.skipped = "the table has no primary key or unique index to walk"
            continue
        kind = _column_type(conn, table, column) or added.get((table, column))
        if kind is None:
            scanned.skipped = "the target column's type is not known"
            continue
        where = step.spec.where if isinstance(step.spec, Backfill) else None
        _scan(conn, scanned, table, key, kind, expr, where, batch)
    return out


def _mappings(steps: list[PlanStep]) -> Iterator[tuple[PlanStep, tuple[Any, ...], str, str, str]]:
    for step in steps:
        spec = step.spec
        at = ("phases", step.phase, step.index, step.kind)
        if isinstance(spec, DualWrite):
            for name, mapping in (("set", spec.set), ("reverse", spec.reverse)):
                for column, expr in mapping.items():
                    yield step, (*at, name, column), spec.table, column, expr
        elif isinstance(spec, Backfill) and spec.set and spec.from_ is None:
            for column, expr in spec.set.items():
                yield step, (*at, "set", column), spec.table, column, expr


def _added_types(loaded: LoadedPlan) -> dict[tuple[Table, str], str]:
    """The types of the columns the plan adds, by table and name."""
    schema = loaded.plan.schema_
    types: dict[tuple[Table, str], str] = {}
    for step in loaded.steps():
        spec = step.spec
        if isinstance(spec, AddColumn):
            types[(Table.parse(spec.table, schema), spec.column.name)] = spec.column.type
        elif isinstance(spec, CreateTable):
            for col in spec.columns:
                types[(Table.parse(spec.table, schema), col.name)] = col.type
    return types


def _column_type(conn: psycopg.Connection[Any], table: Table, column: str) -> str | None:
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s)"
        " AND attname = %s AND attnum > 0 AND NOT attisdropped",
        [table.ident().as_string(conn), column],
    ).fetchone()
    return str(row[0]) if row else None


def _scan(
    conn: psycopg.Connection[Any],
    scanned: Scanned,
    table: Table,
    key: Key,
    kind: str,
    expr: str,
    where: str | None,
    batch: int,
) -> None:
    target = sql.Identifier(SCAN_TABLE)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(target))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (v ").format(target) + user_sql(kind) + sql.SQL(")"))
    condition: sql.Composable = sql.SQL("")
    if where:
        condition = sql.SQL(" AND (") + user_sql(where) + sql.SQL(")")

    def insert(lower: list[str] | None, upper: list[str]) -> None:
        bounds = sql.SQL("{} <= {}").format(key.row(), key.params())
        if lower is not None:
            bounds = sql.SQL("{} > {} AND ").format(key.row(), key.params()) + bounds
        statement = (
            sql.SQL("INSERT INTO pg_temp.{} (v) SELECT (").format(target)
            + user_sql(expr)
            + sql.SQL(") FROM {} WHERE ").format(table.ident())
            + bounds
            + condition
        )
        with conn.transaction():
            conn.execute(statement, [*(lower or []), *upper])

    def bisect(lower: list[str] | None, upper: list[str], rows: int) -> list[tuple[str, str]]:
        try:
            insert(lower, upper)
            return []
        except DATA_ERRORS as e:
            if rows <= 1:
                parts = [f"{c}={v}" for c, v in zip(key.columns, upper, strict=True)]
                shown = parts[0] if len(parts) == 1 else f"({', '.join(parts)})"
                return [(shown, f"{e.diag.message_primary} (SQLSTATE {e.diag.sqlstate})")]
        row = conn.execute(
            upper_bound_sql(table, key, lower=lower is not None, upper=True),
            [*(lower or []), *upper, rows // 2],
        ).fetchone()
        assert row is not None
        middle, first = [str(v) for v in row[:-1]], int(row[-1])
        return bisect(lower, middle, first) + bisect(middle, upper, rows - first)

    last: list[str] | None = None
    try:
        while True:
            with conn.transaction(force_rollback=True):
                conn.execute("SET LOCAL statement_timeout = '60s'; SET LOCAL lock_timeout = '2s'")
                row = conn.execute(
                    upper_bound_sql(table, key, lower=last is not None, upper=False),
                    [*(last or []), batch],
                ).fetchone()
                if row is None:
                    return
                upper, rows = [str(v) for v in row[:-1]], int(row[-1])
                try:
                    bad = bisect(last, upper, rows)
                except psycopg.DatabaseError as e:
                    scanned.skipped = f"{e.diag.message_primary} (SQLSTATE {e.diag.sqlstate})"
                    return
            scanned.rows += rows
            scanned.bad += len(bad)
            scanned.sample += [k for k, _ in bad][: SAMPLE - len(scanned.sample)]
            if bad and scanned.first_error is None:
                scanned.first_error = bad[0][1]
            if bad and len(bad) == rows > 1:
                # Every row of a batch fails: the expression is wrong, not the data.
                scanned.stopped = True
                return
            last = upper
    finally:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(target))
