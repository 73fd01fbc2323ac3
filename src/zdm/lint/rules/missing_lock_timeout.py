"""missing-lock-timeout: a statement that blocks traffic while it waits, with no lock_timeout.

A lock request waits behind every transaction that holds a conflicting lock, and every later
request queues behind it. An ALTER TABLE that waits for a long-running SELECT therefore stops
all reads and writes of the table for as long as that SELECT runs, although the ALTER itself
would take a millisecond. ``SET lock_timeout`` makes it give up instead, to be retried. This
rule looks at statements that take SHARE, SHARE ROW EXCLUSIVE, EXCLUSIVE or ACCESS EXCLUSIVE
on a table that exists already. zdm's own steps (and ``sql`` steps) always run with one.
"""

from __future__ import annotations

from collections.abc import Iterator

from zdm.ddl.locks import LockMode
from zdm.lint.analysis import lock_phrase, locks
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example("ALTER TABLE users ADD COLUMN nickname text;"),
    Example(
        "BEGIN;\nSET LOCAL lock_timeout = '1s';\nCOMMIT;\n"
        "ALTER TABLE users DROP CONSTRAINT users_old_check;"
    ),
    Example("SET lock_timeout = 0;\nALTER TABLE users ALTER COLUMN bio SET DEFAULT '';"),
)
GOOD = (
    Example("SET lock_timeout = '2s';\nALTER TABLE users ADD COLUMN nickname text;"),
    Example(
        "BEGIN;\nSET LOCAL lock_timeout = '1s';\n"
        "ALTER TABLE users DROP CONSTRAINT users_old_check;\nCOMMIT;"
    ),
    Example("SELECT set_config('lock_timeout', '2s', false);\nDROP TRIGGER t_audit ON users;"),
    Example("CREATE INDEX CONCURRENTLY users_nickname_idx ON users (nickname);"),
    Example("CREATE TABLE notes (id bigint PRIMARY KEY);\nALTER TABLE notes ADD COLUMN body text;"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    if ctx.lock_timeout:
        return
    for lock in locks(stmt.node):
        if lock.mode < LockMode.SHARE or ctx.is_new(lock.table):
            continue
        if lock.table in ctx.state.new_indexes:
            continue
        yield Problem(
            f"this statement needs {lock_phrase(lock.mode, lock.table)}, and no lock_timeout "
            "is set: while it waits behind any transaction holding a conflicting lock (even a "
            f"long SELECT), every later query on {lock.table} queues behind it",
            "SET lock_timeout = '2s' before it (SET LOCAL inside a transaction) and retry when "
            "it times out; zdm runs every step under a short, escalating lock_timeout and "
            "retries it",
        )
        return


RULE = Rule(
    "missing-lock-timeout",
    Severity.warning,
    "lock-taking statement with no lock_timeout",
    check,
    BAD,
    GOOD,
)
