"""drop-table: dropping a table that the running application may still use.

``DROP TABLE`` waits for an ACCESS EXCLUSIVE lock, every query of the table fails after it, and
the data is gone. Stop using the table first (or rename it away and keep it a while); in a zdm
plan the drop belongs to cleanup.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from zdm.lint.analysis import table_key
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (Example("DROP TABLE legacy_sessions;"),)
GOOD = (
    Example("CREATE TABLE staging (id bigint);\nDROP TABLE staging;"),
    Example("DROP VIEW IF EXISTS active_users;"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if (
        not isinstance(node, ast.DropStmt)
        or node.removeType is not enums.ObjectType.OBJECT_TABLE
        or ctx.phase == "cleanup"
    ):
        return
    for obj in node.objects or ():
        name = ".".join(n.sval for n in obj if isinstance(n, ast.String) and n.sval)
        if table_key(name) in ctx.state.new_tables:
            continue
        yield Problem(
            f"dropping {name}: every query of the running application that uses it fails "
            "from then on, and its data cannot be brought back",
            "stop using the table in the application first (or rename it away and keep it "
            "for a while), then drop it; in a zdm plan: drop_table in the cleanup phase",
        )


RULE = Rule(
    "drop-table",
    Severity.error,
    "table dropped while the application may use it",
    check,
    BAD,
    GOOD,
)
