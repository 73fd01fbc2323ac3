"""uncommitted-transaction: a ``BEGIN`` that the file never commits.

What runs the file either commits it unasked, so the statements after ``BEGIN`` hold their locks
to the end of the whole migration run, or rolls it back at disconnect and loses them. Either
way the file does not say what happens.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.context import CLOSE, OPEN, Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example("BEGIN;\nCREATE TABLE notes (id bigint PRIMARY KEY);"),
    Example("BEGIN;\nCREATE TABLE a (id bigint);\nCOMMIT;\nSTART TRANSACTION;\nDROP TABLE a;"),
)
GOOD = (
    Example("BEGIN;\nCREATE TABLE notes (id bigint PRIMARY KEY);\nCOMMIT;"),
    Example("BEGIN;\nBEGIN;\nCREATE TABLE notes (id bigint PRIMARY KEY);\nCOMMIT;"),
    Example("CREATE TABLE notes (id bigint PRIMARY KEY);"),
)


def _control(stmt: SqlStatement, kinds: tuple[object, ...]) -> bool:
    return isinstance(stmt.node, ast.TransactionStmt) and stmt.node.kind in kinds


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    if not _control(stmt, OPEN):
        return
    # A BEGIN inside a transaction only warns: the next COMMIT ends the outer one too.
    if any(_control(other, CLOSE) for other in ctx.source.statements[stmt.index + 1 :]):
        return
    yield Problem(
        "this transaction is never committed in the file: the statements after it keep their "
        "locks until whatever runs the file ends its session, or are rolled back with it",
        "end it with COMMIT",
    )


RULE = Rule(
    "uncommitted-transaction",
    Severity.error,
    "BEGIN without COMMIT",
    check,
    BAD,
    GOOD,
)
