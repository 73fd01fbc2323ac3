"""unbatched-dml: an UPDATE or DELETE of a whole table in one statement.

One statement over every row is one transaction: it locks every row it touches until it
commits (application updates of those rows wait), writes a new version of each row (the table
and its indexes grow, WAL spikes, replicas lag) and holds back vacuum for its whole duration.
Kept simple: a statement with no WHERE clause is reported.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.analysis import table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example("UPDATE users SET active = true;"),
    Example("DELETE FROM audit_log;"),
)
GOOD = (
    Example("UPDATE users SET active = true WHERE id BETWEEN 1 AND 10000;"),
    Example("CREATE TABLE stage (id bigint, v int);\nUPDATE stage SET v = 0;"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if not isinstance(node, ast.UpdateStmt | ast.DeleteStmt) or node.whereClause is not None:
        return
    if node.relation is None or ctx.is_new(node.relation):
        return
    table = table_name(node.relation)
    if isinstance(node, ast.UpdateStmt):
        yield Problem(
            f"UPDATE of every row of {table} in one transaction: each row stays locked until "
            "it commits (application updates of them wait), every row gets a new version "
            "(bloat, a burst of WAL, replica lag) and vacuum is held back meanwhile",
            "update in batches by key range, one short transaction each; in a zdm plan: a "
            "backfill step (batched, throttled, resumable)",
        )
    else:
        yield Problem(
            f"DELETE of every row of {table} in one transaction: each row stays locked until "
            "it commits, the WAL of the whole table is written at once (replica lag) and "
            "vacuum is held back meanwhile",
            "delete in batches by key range, one short transaction each (or, when nothing "
            "else uses the table, TRUNCATE it under a lock_timeout)",
        )


RULE = Rule(
    "unbatched-dml",
    Severity.error,
    "UPDATE or DELETE without WHERE over a whole table",
    check,
    BAD,
    GOOD,
)
