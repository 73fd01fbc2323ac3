"""`zdm lint --dsn`: what the live database tells the rules.

Current column types seed the linter's schema, so a type change is judged from the column's
actual type (``varchar(255)`` to ``varchar(500)`` or ``text`` needs no rewrite and passes).
Table sizes and row estimates soften findings about how long a lock is held (a scan, a
rewrite, an index build): on a small table such a statement holds its lock for milliseconds,
so its finding becomes a note, which does not fail the run. Rules about lock queueing
(``missing-lock-timeout``) and statements PostgreSQL rejects keep their severity: a blocked
ALTER of a tiny table still queues every query behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from zdm.lint.findings import Finding, Severity

if TYPE_CHECKING:  # reading the database needs psycopg; linting without --dsn does not
    from zdm.engine.live_schema import LiveSchema
    from zdm.lint.context import Schema

#: Below both, a scan or rewrite under a lock takes milliseconds.
SMALL_ROWS = 10_000
SMALL_BYTES = 8 * 1024 * 1024

#: Rules whose harm grows with the table: how long the lock is held while it scans or rewrites.
SIZE_BOUND_RULES = frozenset(
    {
        "index-not-concurrent",
        "set-not-null-scan",
        "check-without-not-valid",
        "foreign-key-without-not-valid",
        "unique-without-index",
        "add-column-rewrite",
        "column-type-rewrite",
        "volatile-default",
        "vacuum-full",
        "cluster",
        "unbatched-dml",
        "exclusion-constraint",
        "set-tablespace",
        "table-rewrite",
    }
)


def _key(schema: str, name: str) -> str:
    return name if schema == "public" else f"{schema}.{name}"


@dataclass
class Live:
    """The live database as the linter uses it."""

    server_major: int
    small: dict[str, bool]
    """Table key -> small enough that a lock held over a scan is brief."""
    rows: dict[str, int]

    def is_small(self, table: str) -> bool:
        return self.small.get(table.removeprefix("public."), False)


def seed(schema: Schema, live: LiveSchema) -> Live:
    """Put the live tables' column types into ``schema``; the sizes go into the result."""
    from zdm.lint.planlint import _parse_type

    small: dict[str, bool] = {}
    rows: dict[str, int] = {}
    for table in live.tables:
        key = _key(table.schema, table.name)
        model = schema.table(key)
        model.partitioned = model.partitioned or table.partitioned
        for column, type_text in table.columns.items():
            model.columns.setdefault(column, _parse_type(type_text))
        small[key] = table.rows < SMALL_ROWS and table.bytes < SMALL_BYTES
        rows[key] = table.rows
    return Live(live.server_major, small, rows)


def soften(finding: Finding, tables: list[str], live: Live) -> Finding:
    """A note instead of an error or warning when every table the statement holds is small."""
    if finding.rule not in SIZE_BOUND_RULES or not tables:
        return finding
    if not all(live.is_small(t) for t in tables):
        return finding
    sizes = ", ".join(
        f"{t} ~{max(live.rows.get(t.removeprefix('public.'), 0), 0):,} rows" for t in tables
    )
    return Finding(
        finding.rule,
        Severity.note,
        finding.file,
        finding.line,
        finding.column,
        f"{finding.message} (the live table is small: {sizes}; the lock is held briefly)",
        finding.fix,
    )
