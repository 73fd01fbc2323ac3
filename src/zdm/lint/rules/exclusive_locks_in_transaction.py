"""exclusive-locks-in-transaction: ACCESS EXCLUSIVE on several tables in one transaction.

A transaction keeps every lock until it ends. Once it holds ACCESS EXCLUSIVE on one table, any
wait for the next table's lock (behind a long query) stalls all traffic on the first one as
well, and two such migrations, or a migration and the application, can deadlock. Change each
table in its own short transaction.
"""

from __future__ import annotations

from collections.abc import Iterator

from zdm.ddl.locks import LockMode
from zdm.lint.analysis import locks
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example(
        "SET lock_timeout = '2s';\n"
        "BEGIN;\n"
        "ALTER TABLE orders ADD COLUMN note text;\n"
        "ALTER TABLE users ADD COLUMN note text;\n"
        "COMMIT;"
    ),
    Example(
        "SET lock_timeout = '2s';\n"
        "ALTER TABLE orders DROP CONSTRAINT orders_old_check;\n"
        "ALTER TABLE invoices DROP CONSTRAINT invoices_old_check;"
    ),
)
GOOD = (
    Example(
        "SET lock_timeout = '2s';\n"
        "BEGIN;\n"
        "ALTER TABLE orders ADD COLUMN note text;\n"
        "ALTER TABLE orders ADD COLUMN note2 text;\n"
        "COMMIT;\n"
        "BEGIN;\n"
        "ALTER TABLE users ADD COLUMN note text;\n"
        "COMMIT;"
    ),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    if ctx.txn is None or not ctx.state.held:
        return
    for lock in locks(stmt.node):
        if lock.mode is not LockMode.ACCESS_EXCLUSIVE or ctx.is_new(lock.table):
            continue
        if lock.key in ctx.state.held:
            continue
        held = ", ".join(f"{name} (line {line})" for name, line in ctx.state.held.values())
        where = ctx.txn.describe() if ctx.phase is None else "this sql step's transaction"
        yield Problem(
            f"{where} already holds an ACCESS EXCLUSIVE lock on {held}; while this statement "
            f"waits for its own lock on {lock.table}, every read and write of those tables "
            "waits too, and the locks are held until the transaction ends",
            "change each table in its own short transaction, each under a lock_timeout; zdm "
            "runs every step in its own transaction",
        )
        return


RULE = Rule(
    "exclusive-locks-in-transaction",
    Severity.warning,
    "several ACCESS EXCLUSIVE locks in one transaction",
    check,
    BAD,
    GOOD,
)
