"""column-type-rewrite: ``ALTER COLUMN ... TYPE`` that rewrites the table.

A type change rewrites every row and rebuilds every index of the table under ACCESS EXCLUSIVE,
unless the old and new types are binary compatible: a longer ``varchar``, ``varchar`` to
``text``, ``numeric`` with more precision and the same scale, unconstrained ``numeric``,
``cidr`` to ``inet``, wider ``bit varying``, finer timestamp/time precision, and ``timestamp``
to ``timestamptz`` (or back) while the session's TimeZone is UTC. A ``USING`` expression always
rewrites. The old type comes from earlier migrations linted together with this file; when it is
unknown and the new type could be a cheap target, the finding is a warning.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.analysis import alter_commands, column_refs, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement
from zdm.lint.types import MAYBE_CHEAP_TARGETS, Rewrite, type_change, type_ref

HISTORY = (
    "CREATE TABLE users (id int PRIMARY KEY, email varchar(100), bio varchar(200),"
    " price numeric(10, 2), net cidr, seen timestamp, score int);"
)

BAD = (
    Example("ALTER TABLE users ALTER COLUMN id TYPE bigint;", HISTORY),
    Example("ALTER TABLE users ALTER COLUMN email TYPE varchar(50);", HISTORY),
    Example("ALTER TABLE users ALTER COLUMN price TYPE numeric(12, 4);", HISTORY),
    Example("ALTER TABLE users ALTER COLUMN score TYPE text USING score::text;", HISTORY),
    Example("ALTER TABLE users ALTER COLUMN seen TYPE timestamptz;", HISTORY),
    Example("ALTER TABLE accounts ALTER COLUMN balance TYPE bigint;"),
    Example("ALTER TABLE accounts ALTER COLUMN note TYPE text;"),
)
GOOD = (
    Example("ALTER TABLE users ALTER COLUMN email TYPE varchar(200);", HISTORY),
    Example("ALTER TABLE users ALTER COLUMN bio TYPE text;", HISTORY),
    Example("ALTER TABLE users ALTER COLUMN bio TYPE varchar;", HISTORY),
    Example("ALTER TABLE users ALTER COLUMN price TYPE numeric(14, 2);", HISTORY),
    Example("ALTER TABLE users ALTER COLUMN price TYPE numeric;", HISTORY),
    Example("ALTER TABLE users ALTER COLUMN net TYPE inet;", HISTORY),
    Example(
        "SET timezone = 'UTC';\nALTER TABLE users ALTER COLUMN seen TYPE timestamptz;", HISTORY
    ),
)

_FIX = (
    "migrate through a new column: add it, keep it in step with a dual_write trigger (set "
    "new from old), backfill it in batches, then swap the columns in cleanup; `zdm convert` "
    "writes that plan"
)


def _plain_using(using: ast.Node | None, column: str) -> bool:
    """No USING, or USING that only names the column (possibly cast to the new type)."""
    if using is None:
        return True
    if isinstance(using, ast.TypeCast):
        using = using.arg
    return isinstance(using, ast.ColumnRef) and column_refs(using) == [column]


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    for rel, cmd, kind in alter_commands(stmt.node):
        if kind != "AT_AlterColumnType" or ctx.is_new(rel) or not cmd.name:
            continue
        definition = cmd.def_
        if not isinstance(definition, ast.ColumnDef) or definition.typeName is None:
            continue
        new = type_ref(definition.typeName)
        old = ctx.column_type(rel, cmd.name)
        table = table_name(rel)
        column = f"{table}.{cmd.name}"
        rewrite = (
            f"rewrites all of {table} and rebuilds its indexes while holding an ACCESS "
            f"EXCLUSIVE lock: every read and write of {table} waits until it ends"
        )
        if not _plain_using(definition.raw_default, cmd.name):
            yield Problem(f"changing {column} to {new} with a USING expression {rewrite}", _FIX)
        elif old is None:
            if new.name in MAYBE_CHEAP_TARGETS and not new.array:
                yield Problem(
                    f"changing {column} to {new} {rewrite}, unless its current type converts "
                    "without a rewrite (varchar to a longer varchar or text, numeric of the "
                    "same scale, cidr to inet, timestamp to timestamptz in UTC); the migrations "
                    "linted here do not say what the column is now",
                    "check the current type (lint this file together with the migration that "
                    "created the column), or " + _FIX,
                    severity=Severity.warning,
                )
            else:
                yield Problem(f"changing {column} to {new} {rewrite}", _FIX)
        else:
            verdict = type_change(old, new)
            if verdict is Rewrite.YES:
                yield Problem(f"changing {column} from {old} to {new} {rewrite}", _FIX)
            elif verdict is Rewrite.ONLY_IN_UTC and not ctx.state.utc:
                yield Problem(
                    f"changing {column} from {old} to {new} is catalog-only only while the "
                    f"session's TimeZone is UTC; otherwise it {rewrite}",
                    "SET timezone = 'UTC' earlier in the same session (PostgreSQL 12+), or " + _FIX,
                    severity=Severity.warning,
                )


RULE = Rule(
    "column-type-rewrite",
    Severity.error,
    "column type change that rewrites the table",
    check,
    BAD,
    GOOD,
)
