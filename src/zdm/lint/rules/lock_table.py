"""lock-table: an explicit ``LOCK TABLE`` in a mode that blocks the application.

``LOCK TABLE`` without a mode takes ACCESS EXCLUSIVE; SHARE and stronger modes block writes.
The lock is held until the transaction ends, so everything that follows in it runs while the
application waits. The statements themselves take the locks they need; zdm steps take the
weakest lock that works and give up after a short lock_timeout.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.ddl.locks import LockMode
from zdm.lint.analysis import lock_phrase, locks
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (Example("BEGIN;\nLOCK TABLE users;\nCOMMIT;"), Example("LOCK TABLE users IN SHARE MODE;"))
GOOD = (
    Example("LOCK TABLE users IN ACCESS SHARE MODE;"),
    Example("LOCK users IN ROW EXCLUSIVE MODE;"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if not isinstance(node, ast.LockStmt):
        return
    for lock in locks(node):
        if lock.mode < LockMode.SHARE or ctx.is_new(lock.table):
            continue
        yield Problem(
            f"LOCK TABLE takes {lock_phrase(lock.mode, lock.table)}, and holds it until the "
            "transaction ends: everything after it in the transaction runs while the "
            "application waits",
            "drop the explicit lock: each statement takes the lock it needs; keep transactions "
            "short and set a lock_timeout (zdm runs each step in its own short transaction)",
        )


RULE = Rule("lock-table", Severity.error, "explicit LOCK TABLE", check, BAD, GOOD)
