"""table-rewrite: ``SET LOGGED``, ``SET UNLOGGED`` and ``SET ACCESS METHOD`` copy the table under
ACCESS EXCLUSIVE.

Each writes every row into a new file (and, for ``SET LOGGED``, into the WAL) and rebuilds every
index, while nothing can read or write the table. An unlogged table is also emptied by a crash
and not replicated: going the other way is no shortcut either.
"""

from __future__ import annotations

from collections.abc import Iterator

from zdm.lint.analysis import alter_commands, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

REWRITES = {
    "AT_SetLogged": "SET LOGGED",
    "AT_SetUnLogged": "SET UNLOGGED",
    "AT_SetAccessMethod": "SET ACCESS METHOD",
}

BAD = (
    Example("ALTER TABLE events SET LOGGED;"),
    Example("ALTER TABLE events SET UNLOGGED;"),
    Example("ALTER TABLE events SET ACCESS METHOD heap2;"),
)
GOOD = (
    Example("CREATE UNLOGGED TABLE staging (id bigint);\nALTER TABLE staging SET LOGGED;"),
    Example("ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.01);"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    for rel, _cmd, kind in alter_commands(stmt.node):
        if kind not in REWRITES or ctx.is_new(rel):
            continue
        yield Problem(
            f"{REWRITES[kind]} rewrites {table_name(rel)} and rebuilds every index while holding "
            "an ACCESS EXCLUSIVE lock: every read and write waits for the whole copy",
            "create the new table as it should be (logged, or with its access method), copy the "
            "rows over in batches while a dual-write trigger keeps it current, then swap the "
            "names (zdm: create_table, dual_write, backfill, rename_table)",
        )


RULE = Rule(
    "table-rewrite",
    Severity.error,
    "ALTER TABLE ... SET LOGGED / UNLOGGED / ACCESS METHOD",
    check,
    BAD,
    GOOD,
)
