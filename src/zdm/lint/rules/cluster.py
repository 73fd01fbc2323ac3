"""cluster: ``CLUSTER`` rewrites a table in index order under ACCESS EXCLUSIVE.

Like VACUUM FULL, it copies the whole table and rebuilds its indexes while nothing else can read
or write it. pg_repack can reorder a table online (``--order-by``).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.analysis import table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (Example("CLUSTER users USING users_pkey;"), Example("CLUSTER;"))
GOOD = (
    Example("ALTER TABLE users CLUSTER ON users_pkey;"),
    Example("CREATE TABLE archive (id bigint PRIMARY KEY);\nCLUSTER archive USING archive_pkey;"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if not isinstance(node, ast.ClusterStmt):
        return
    if node.relation is not None and ctx.is_new(node.relation):
        return
    target = table_name(node.relation) if node.relation is not None else "every clustered table"
    yield Problem(
        f"CLUSTER rewrites {target} in index order and rebuilds its indexes while holding an "
        "ACCESS EXCLUSIVE lock: every read and write waits for the whole rewrite",
        "reorder the table online with pg_repack --order-by, or leave it to new data; zdm has "
        "no step for it",
    )


RULE = Rule("cluster", Severity.error, "CLUSTER", check, BAD, GOOD)
