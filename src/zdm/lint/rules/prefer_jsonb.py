"""prefer-jsonb: a column of type ``json`` where ``jsonb`` is meant.

``json`` keeps the text as written and re-parses it on every access; it has no equality
operator, so DISTINCT, GROUP BY, UNION and unique indexes fail on it, and it cannot be indexed
with GIN. Changing the type later rewrites the table. This is about the type, so it is reported
for new tables too.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.analysis import walk
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement
from zdm.lint.types import type_ref

BAD = (
    Example("CREATE TABLE hooks (id bigint PRIMARY KEY, payload json);"),
    Example("ALTER TABLE users ADD COLUMN prefs json;"),
)
GOOD = (
    Example("CREATE TABLE hooks (id bigint PRIMARY KEY, payload jsonb);"),
    Example("SELECT '{}'::json;"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if not isinstance(node, ast.CreateStmt | ast.AlterTableStmt):
        return
    for item in walk(node):
        if not isinstance(item, ast.ColumnDef) or item.typeName is None:
            continue
        if type_ref(item.typeName).name != "json":
            continue
        yield Problem(
            f"column {item.colname or ''} is json: the text is kept as written and re-parsed "
            "on every access, it has no equality operator (DISTINCT, GROUP BY and unique "
            "indexes fail) and no GIN index; changing it later rewrites the table",
            "use jsonb",
            at=item.location if item.location is not None and item.location >= 0 else None,
        )


RULE = Rule("prefer-jsonb", Severity.warning, "json instead of jsonb", check, BAD, GOOD)
