"""volatile-default: ``ADD COLUMN`` with a volatile default rewrites the table.

Since PostgreSQL 11 a non-volatile default (a constant, ``now()``, any immutable or stable
expression) is evaluated once and kept in the catalog: adding the column touches no row. A
volatile default (``random()``, ``gen_random_uuid()``, ``clock_timestamp()``, ``nextval()``)
needs a value per row, so the whole table is rewritten under ACCESS EXCLUSIVE. Functions the
linter does not know are reported as a warning: ``CREATE FUNCTION`` makes functions VOLATILE
unless told otherwise. With ``--pg-version`` 10 or older, every default rewrites the table.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.analysis import alter_commands, deparse, table_name
from zdm.lint.columns import new_column, volatility
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example("ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();"),
    Example("ALTER TABLE users ADD COLUMN seen_at timestamptz NOT NULL DEFAULT clock_timestamp();"),
    Example("ALTER TABLE users ADD COLUMN shard int DEFAULT my_shard_picker();"),
)
GOOD = (
    Example("ALTER TABLE users ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();"),
    Example("ALTER TABLE users ADD COLUMN status text NOT NULL DEFAULT 'active';"),
    Example("ALTER TABLE users ALTER COLUMN token SET DEFAULT gen_random_uuid();"),
)


def _location(node: ast.ColumnDef) -> int | None:
    return node.location if node.location is not None and node.location >= 0 else None


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    for rel, cmd, kind in alter_commands(stmt.node):
        if kind != "AT_AddColumn" or ctx.is_new(rel) or not isinstance(cmd.def_, ast.ColumnDef):
            continue
        column = new_column(cmd.def_)
        if column.default is None:
            continue
        volatile, unknown = volatility(column.default)
        old_server = ctx.pg_before(11)
        if not volatile and not unknown and not old_server:
            continue
        table = table_name(rel)
        default = deparse(column.default)
        fix = (
            f"add {column.name} without the default, SET DEFAULT {default} (catalog only, new "
            "rows get a value), and fill existing rows in batches; in a zdm plan: add_column, "
            f"set_default, and a backfill with set {{{column.name}: {default}}} where "
            f"{column.name} IS NULL (`zdm convert` writes it)"
        )
        if old_server and not volatile:
            yield Problem(
                f"ADD COLUMN {column.name} DEFAULT {default} rewrites all of {table} before "
                f"PostgreSQL 11 (--pg-version {ctx.state.pg_version}): every row gets the value "
                f"while an ACCESS EXCLUSIVE lock blocks every read and write of {table}",
                fix,
                at=_location(cmd.def_),
                severity=Severity.error,
            )
        elif volatile:
            yield Problem(
                f"ADD COLUMN {column.name} with the volatile default {default} rewrites all of "
                f"{table} (every row needs its own value) while holding an ACCESS EXCLUSIVE "
                f"lock: every read and write of {table} waits for the rewrite",
                fix,
                at=_location(cmd.def_),
            )
        else:
            yield Problem(
                f"ADD COLUMN {column.name} DEFAULT {default} calls {', '.join(unknown)}, whose "
                f"volatility the linter does not know: if it is VOLATILE (the default of CREATE "
                f"FUNCTION), all of {table} is rewritten under an ACCESS EXCLUSIVE lock",
                "make sure the function is declared STABLE or IMMUTABLE, or " + fix,
                at=_location(cmd.def_),
                severity=Severity.warning,
            )


RULE = Rule(
    "volatile-default",
    Severity.error,
    "volatile default in ADD COLUMN rewrites the table",
    check,
    BAD,
    GOOD,
)
