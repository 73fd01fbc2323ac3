"""truncate-cascade: ``TRUNCATE ... CASCADE`` empties tables the statement does not name.

CASCADE also truncates every table with a foreign key to the named ones, and the tables that
reference those, each under ACCESS EXCLUSIVE; which tables that is depends on the schema at the
moment it runs, not on what the migration's author saw.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from zdm.lint.analysis import table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (Example("TRUNCATE users CASCADE;"),)
GOOD = (Example("TRUNCATE sessions, session_events;"),)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if not isinstance(node, ast.TruncateStmt):
        return
    if node.behavior is not enums.DropBehavior.DROP_CASCADE:
        return
    names = [table_name(r) for r in node.relations or () if isinstance(r, ast.RangeVar)]
    yield Problem(
        f"TRUNCATE {', '.join(names)} CASCADE also empties every table that references "
        "them through a foreign key (and the tables referencing those), each under an ACCESS "
        "EXCLUSIVE lock; which tables that is depends on the schema when it runs",
        "name every table to empty and drop CASCADE, so the statement fails instead of "
        "emptying a table nobody meant to",
    )


RULE = Rule("truncate-cascade", Severity.error, "TRUNCATE ... CASCADE", check, BAD, GOOD)
