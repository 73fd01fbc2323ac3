"""index-not-concurrent: an index created, dropped or rebuilt without CONCURRENTLY.

A plain ``CREATE INDEX`` holds a SHARE lock for the whole build, so every write to the table
waits until the entire table has been read and sorted; ``DROP INDEX`` and ``REINDEX`` take
ACCESS EXCLUSIVE (on the table, or on the index that queries need). The CONCURRENTLY forms take
SHARE UPDATE EXCLUSIVE, which lets reads and writes continue.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from zdm.lint.analysis import option_names, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example("CREATE INDEX users_email_idx ON users (email);"),
    Example("CREATE UNIQUE INDEX users_email_key ON users (lower(email));"),
    Example("DROP INDEX users_email_idx;"),
    Example("REINDEX INDEX users_email_idx;"),
    Example("REINDEX TABLE users;"),
)
GOOD = (
    Example("CREATE INDEX CONCURRENTLY users_email_idx ON users (email);"),
    Example("DROP INDEX CONCURRENTLY IF EXISTS users_email_idx;"),
    Example("REINDEX INDEX CONCURRENTLY users_email_idx;"),
    Example(
        "CREATE TABLE events (id bigint PRIMARY KEY, kind text);\n"
        "CREATE INDEX events_kind_idx ON events (kind);\n"
        "DROP INDEX events_kind_idx;"
    ),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if isinstance(node, ast.IndexStmt) and not node.concurrent and node.relation is not None:
        if ctx.is_new(node.relation):
            return
        table = table_name(node.relation)
        yield Problem(
            f"CREATE INDEX on {table} holds a SHARE lock for the whole build: every INSERT, "
            f"UPDATE and DELETE on {table} waits while the entire table is read and sorted "
            "(reads continue)",
            "CREATE INDEX CONCURRENTLY, outside any transaction block; in a zdm plan: "
            "create_index, which also rebuilds an INVALID index left by a failed build",
        )
    elif (
        isinstance(node, ast.DropStmt)
        and node.removeType is enums.ObjectType.OBJECT_INDEX
        and not node.concurrent
    ):
        for obj in node.objects or ():
            name = ".".join(n.sval for n in obj if isinstance(n, ast.String) and n.sval)
            if name in ctx.state.new_indexes:
                continue
            yield Problem(
                f"DROP INDEX {name} takes an ACCESS EXCLUSIVE lock on its table: every read "
                "and write of the table waits for it, and it waits behind any running query",
                "DROP INDEX CONCURRENTLY, outside any transaction block; in a zdm plan: drop_index",
            )
    elif isinstance(node, ast.ReindexStmt) and "concurrently" not in option_names(node.params):
        target = table_name(node.relation) if node.relation is not None else node.name
        yield Problem(
            f"REINDEX of {target} holds a SHARE lock on the table (every write waits) and an "
            "ACCESS EXCLUSIVE lock on each index it rebuilds (queries that would use it wait) "
            "until the rebuild ends",
            "REINDEX ... CONCURRENTLY (PostgreSQL 12+), outside any transaction block; or "
            "build a replacement with create_index and remove the old one with drop_index",
        )


RULE = Rule(
    "index-not-concurrent",
    Severity.error,
    "index created, dropped or rebuilt without CONCURRENTLY",
    check,
    BAD,
    GOOD,
)
