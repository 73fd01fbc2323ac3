"""set-not-null-scan: ``SET NOT NULL`` that scans the table under ACCESS EXCLUSIVE.

``ALTER COLUMN ... SET NOT NULL`` reads every row to prove there is no NULL while holding ACCESS
EXCLUSIVE. PostgreSQL 12+ skips the scan when a validated ``CHECK (col IS NOT NULL)`` already
proves it, so the safe sequence is: add that check NOT VALID, validate it in its own
transaction, set NOT NULL, drop the check. The same holds for PostgreSQL 18's
``ADD CONSTRAINT ... NOT NULL col`` without NOT VALID.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from zdm.lint.analysis import alter_commands, constraints_of, not_valid, table_key, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (Example("ALTER TABLE users ALTER COLUMN email SET NOT NULL;"),)
PG18_BAD = Example("ALTER TABLE users ADD CONSTRAINT users_email_nn NOT NULL email;")
"""PostgreSQL 18 syntax: parsed only by pglast 8 and later."""
GOOD = (
    Example(
        "ALTER TABLE users ADD CONSTRAINT users_email_nn CHECK (email IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE users VALIDATE CONSTRAINT users_email_nn;\n"
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\n"
        "ALTER TABLE users DROP CONSTRAINT users_email_nn;"
    ),
    Example(
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL;",
        history=(
            "CREATE TABLE users (id bigint PRIMARY KEY, email text);\n"
            "ALTER TABLE users ADD CONSTRAINT users_email_nn CHECK (email IS NOT NULL) NOT VALID;\n"
            "ALTER TABLE users VALIDATE CONSTRAINT users_email_nn;"
        ),
    ),
)

_FIX = (
    "ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in its own "
    "transaction, then SET NOT NULL (PostgreSQL uses the validated check and skips the scan) "
    "and drop the check; in a zdm plan: set_not_null does all of it"
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    for rel, cmd, kind in alter_commands(stmt.node):
        if ctx.is_new(rel):
            continue
        table = table_name(rel)
        model = ctx.state.schema.tables.get(table_key(rel))
        proven = model.not_null_proven if model else set()
        columns: list[str] = []
        if kind == "AT_SetNotNull" and cmd.name:
            columns.append(cmd.name)
        for con in constraints_of(cmd) if kind == "AT_AddConstraint" else []:
            if con.contype is enums.ConstrType.CONSTR_NOTNULL and not not_valid(con):
                columns.extend(
                    k.sval for k in con.keys or () if isinstance(k, ast.String) and k.sval
                )
        for column in columns:
            if column in proven:
                continue
            yield Problem(
                f"making {table}.{column} NOT NULL scans the whole table for NULLs while holding "
                f"an ACCESS EXCLUSIVE lock on {table}: every read and write of it waits for the scan",
                _FIX,
            )


RULE = Rule(
    "set-not-null-scan",
    Severity.error,
    "SET NOT NULL that scans the table",
    check,
    BAD,
    GOOD,
)
