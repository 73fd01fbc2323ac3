"""add-column-not-null-no-default: ``ADD COLUMN ... NOT NULL`` without a default.

Every existing row would hold NULL in the new column, so on a table with rows the statement
fails (and on an empty one it only works until the application, which does not know the column
yet, inserts a row). Add the column nullable, or with a constant default, which PostgreSQL 11+
stores in the catalog without touching the rows.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.analysis import alter_commands, table_name
from zdm.lint.columns import new_column
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example("ALTER TABLE users ADD COLUMN tenant_id bigint NOT NULL;"),
    Example("ALTER TABLE users ADD COLUMN tenant_id bigint PRIMARY KEY;"),
)
GOOD = (
    Example("ALTER TABLE users ADD COLUMN tenant_id bigint;"),
    Example("ALTER TABLE users ADD COLUMN active boolean NOT NULL DEFAULT true;"),
    Example(
        "CREATE TABLE teams (id bigint PRIMARY KEY);\n"
        "ALTER TABLE teams ADD COLUMN name text NOT NULL;"
    ),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    for rel, cmd, kind in alter_commands(stmt.node):
        if kind != "AT_AddColumn" or ctx.is_new(rel) or not isinstance(cmd.def_, ast.ColumnDef):
            continue
        column = new_column(cmd.def_)
        if not column.not_null or column.gets_values:
            continue
        table = table_name(rel)
        yield Problem(
            f"ADD COLUMN {column.name} NOT NULL without a default fails on {table} as soon as "
            "it has a row (every existing row would be NULL), and old application code that "
            "inserts without the column fails after it",
            "add the column nullable (or with a constant DEFAULT: catalog only), fill it with "
            "a dual_write trigger and a batched backfill, then set_not_null in the cleanup "
            "phase; `zdm convert` writes that plan",
            at=cmd.def_.location
            if cmd.def_.location is not None and cmd.def_.location >= 0
            else None,
        )


RULE = Rule(
    "add-column-not-null-no-default",
    Severity.error,
    "ADD COLUMN NOT NULL without a default",
    check,
    BAD,
    GOOD,
)
