"""refresh-materialized-view: ``REFRESH MATERIALIZED VIEW`` without ``CONCURRENTLY`` blocks every
read of the view.

Without ``CONCURRENTLY`` the refresh takes ACCESS EXCLUSIVE on the view for the whole query that
recomputes it: every ``SELECT`` of the view waits. ``CONCURRENTLY`` takes EXCLUSIVE, which lets
reads go on; it needs a unique index on the view (without a WHERE clause, on columns only) and
a view that was populated.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.analysis import table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (Example("REFRESH MATERIALIZED VIEW daily_sales;"),)
GOOD = (
    Example("REFRESH MATERIALIZED VIEW CONCURRENTLY daily_sales;"),
    Example(
        "CREATE MATERIALIZED VIEW totals AS SELECT 1 AS n WITH NO DATA;\n"
        "REFRESH MATERIALIZED VIEW totals;"
    ),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if not isinstance(node, ast.RefreshMatViewStmt) or node.concurrent or node.relation is None:
        return
    if ctx.is_new(node.relation):
        return
    name = table_name(node.relation)
    yield Problem(
        f"REFRESH MATERIALIZED VIEW {name} holds an ACCESS EXCLUSIVE lock on it while its query "
        "runs again: every read of the view waits for the whole refresh",
        f"REFRESH MATERIALIZED VIEW CONCURRENTLY {name} (reads go on; it needs a unique index on "
        "the view's columns, without a WHERE clause)",
    )


RULE = Rule(
    "refresh-materialized-view",
    Severity.error,
    "REFRESH MATERIALIZED VIEW without CONCURRENTLY",
    check,
    BAD,
    GOOD,
)
