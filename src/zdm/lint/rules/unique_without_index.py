"""unique-without-index: a UNIQUE or PRIMARY KEY constraint that builds its index under lock.

``ADD CONSTRAINT ... UNIQUE`` / ``PRIMARY KEY`` (and inline ``UNIQUE`` / ``PRIMARY KEY`` in
``ADD COLUMN``) build a unique index while holding ACCESS EXCLUSIVE: nothing reads or writes the
table until the whole table has been read and sorted. Building the index concurrently first and
attaching it with ``USING INDEX`` is catalog-only.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import enums

from zdm.lint.analysis import alter_commands, constraints_of, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

CT = enums.ConstrType

BAD = (
    Example("ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);"),
    Example("ALTER TABLE users ADD PRIMARY KEY (id);"),
    Example("ALTER TABLE users ADD COLUMN handle text UNIQUE;"),
)
GOOD = (
    Example("ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key;"),
    Example("CREATE TABLE tags (id bigint, name text);\nALTER TABLE tags ADD PRIMARY KEY (id);"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    for rel, cmd, kind in alter_commands(stmt.node):
        if ctx.is_new(rel) or kind not in ("AT_AddConstraint", "AT_AddColumn"):
            continue
        table = table_name(rel)
        for con in constraints_of(cmd):
            if con.contype not in (CT.CONSTR_UNIQUE, CT.CONSTR_PRIMARY) or con.indexname:
                continue
            primary = con.contype is CT.CONSTR_PRIMARY
            what = "PRIMARY KEY" if primary else "UNIQUE"
            fix = (
                "CREATE UNIQUE INDEX CONCURRENTLY, make its columns NOT NULL without a scan, "
                "then ADD CONSTRAINT ... PRIMARY KEY USING INDEX (catalog only); in a zdm plan: "
                "create_index (unique: true), set_not_null, and an sql step for the USING INDEX"
                if primary
                else "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING "
                "INDEX (catalog only); in a zdm plan: add_unique does both"
            )
            yield Problem(
                f"adding a {what} constraint builds its unique index while holding an ACCESS "
                f"EXCLUSIVE lock on {table}: every read and write of {table} waits until the "
                "whole table has been read and sorted",
                fix,
                at=con.location if con.location is not None and con.location >= 0 else None,
            )


RULE = Rule(
    "unique-without-index",
    Severity.error,
    "UNIQUE or PRIMARY KEY added by building an index under ACCESS EXCLUSIVE",
    check,
    BAD,
    GOOD,
)
