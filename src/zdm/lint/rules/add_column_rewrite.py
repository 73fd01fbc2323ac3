"""add-column-rewrite: a serial, identity or stored generated column added to an existing table.

Each of these gives every existing row its own value (the next sequence number, the computed
expression), so PostgreSQL rewrites the whole table under ACCESS EXCLUSIVE. PostgreSQL 18's
VIRTUAL generated columns store nothing and are not reported.
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
    Example("ALTER TABLE events ADD COLUMN seq bigserial;"),
    Example("ALTER TABLE events ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;"),
    Example(
        "ALTER TABLE events ADD COLUMN total numeric GENERATED ALWAYS AS (qty * price) STORED;"
    ),
)
GOOD = (
    Example("CREATE TABLE things (id bigserial PRIMARY KEY, name text);"),
    Example("ALTER TABLE events ADD COLUMN seq bigint;"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    for rel, cmd, kind in alter_commands(stmt.node):
        if kind != "AT_AddColumn" or ctx.is_new(rel) or not isinstance(cmd.def_, ast.ColumnDef):
            continue
        column = new_column(cmd.def_)
        table = table_name(rel)
        if column.serial or column.identity:
            what = f"a {column.type_name} column" if column.serial else "an identity column"
            fix = (
                "add a nullable bigint column, create a sequence, SET DEFAULT nextval(...) "
                "(catalog only), backfill existing rows in batches, then set_not_null; "
                "`zdm convert` writes that plan for serial columns"
            )
        elif column.generated_stored:
            what = "a stored generated column"
            fix = (
                "add a plain column, keep it computed with a dual_write trigger and fill "
                "existing rows with a backfill; or, on PostgreSQL 18, a VIRTUAL generated "
                "column, which stores nothing"
            )
        else:
            continue
        yield Problem(
            f"adding {what} ({column.name}) gives every existing row of {table} its own value: "
            f"the whole table is rewritten while an ACCESS EXCLUSIVE lock blocks every read "
            "and write of it",
            fix,
        )


RULE = Rule(
    "add-column-rewrite",
    Severity.error,
    "serial, identity or stored generated column added to an existing table",
    check,
    BAD,
    GOOD,
)
