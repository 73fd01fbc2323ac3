"""concurrently-in-transaction: a CONCURRENTLY statement that would run inside a transaction.

``CREATE INDEX CONCURRENTLY``, ``DROP INDEX CONCURRENTLY``, ``REINDEX CONCURRENTLY`` and
``DETACH PARTITION CONCURRENTLY`` refuse to run in a transaction block, so the migration fails.
That happens with an explicit ``BEGIN``, and also when a migration tool runs the whole file in
one transaction (Flyway, Rails, Django and most others do unless told not to), or when a zdm
``sql`` step is transactional.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.analysis import alter_commands, option_names
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example("BEGIN;\nCREATE INDEX CONCURRENTLY users_email_idx ON users (email);\nCOMMIT;"),
    Example(
        "SET lock_timeout = '2s';\n"
        "ALTER TABLE users ADD COLUMN nickname text;\n"
        "CREATE INDEX CONCURRENTLY users_nickname_idx ON users (nickname);"
    ),
    Example("DROP INDEX CONCURRENTLY a_idx;\nDROP INDEX CONCURRENTLY b_idx;"),
)
GOOD = (
    Example("CREATE INDEX CONCURRENTLY users_email_idx ON users (email);"),
    Example(
        "-- each statement runs on its own: no BEGIN, and the tool was told so\n"
        "REINDEX INDEX CONCURRENTLY users_email_idx;"
    ),
)


def _concurrent(node: ast.Node) -> str | None:
    if isinstance(node, ast.IndexStmt) and node.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if isinstance(node, ast.DropStmt) and node.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if isinstance(node, ast.ReindexStmt) and "concurrently" in option_names(node.params):
        return "REINDEX CONCURRENTLY"
    for _, cmd, kind in alter_commands(node):
        spec = cmd.def_
        if kind == "AT_DetachPartition" and isinstance(spec, ast.PartitionCmd) and spec.concurrent:
            return "DETACH PARTITION CONCURRENTLY"
    return None


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    what = _concurrent(stmt.node)
    if what is None or ctx.txn is None:
        return
    if ctx.txn.explicit:
        where = ctx.txn.describe()
    elif ctx.phase is not None:
        where = "the transaction of this sql step (the whole up runs as one)"
    else:
        where = (
            "one transaction with the file's other statements (migration tools such as "
            "Flyway run a file in one transaction)"
        )
    yield Problem(
        f"{what} cannot run inside a transaction block, and here it runs in {where}: "
        "PostgreSQL rejects it and the migration fails",
        "give it a file of its own with no other statement (Flyway: or executeInTransaction="
        "false in the file's .conf); in a zdm plan: create_index / drop_index, which run "
        "outside any transaction, or an sql step with transactional: false and this statement "
        "alone",
    )


RULE = Rule(
    "concurrently-in-transaction",
    Severity.error,
    "CONCURRENTLY statement inside a transaction block",
    check,
    BAD,
    GOOD,
)
