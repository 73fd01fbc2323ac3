"""detach-partition-not-concurrent: ``DETACH PARTITION`` without ``CONCURRENTLY`` holds ACCESS
EXCLUSIVE on the partitioned table.

Every query of every partition waits while it queues and while it runs, and a foreign key that
references the partitioned table makes it check the detached partition's rows under that lock.
From PostgreSQL 14, ``DETACH PARTITION ... CONCURRENTLY`` takes SHARE UPDATE EXCLUSIVE on the
parent instead (outside a transaction block; not with a default partition).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.analysis import alter_commands, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (Example("ALTER TABLE events DETACH PARTITION events_2019;"),)
GOOD = (
    Example("ALTER TABLE events DETACH PARTITION events_2019 CONCURRENTLY;"),
    Example("ALTER TABLE events DETACH PARTITION events_2019 FINALIZE;"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    if ctx.pg_before(14):
        return
    for rel, cmd, kind in alter_commands(stmt.node):
        spec = cmd.def_
        if kind != "AT_DetachPartition" or ctx.is_new(rel):
            continue
        if isinstance(spec, ast.PartitionCmd) and spec.concurrent:
            continue
        yield Problem(
            f"DETACH PARTITION holds an ACCESS EXCLUSIVE lock on {table_name(rel)}: every query "
            "of every partition waits behind it",
            "DETACH PARTITION … CONCURRENTLY (PostgreSQL 14+, a statement of its own outside a "
            "transaction block), which takes SHARE UPDATE EXCLUSIVE",
        )


RULE = Rule(
    "detach-partition-not-concurrent",
    Severity.warning,
    "DETACH PARTITION without CONCURRENTLY",
    check,
    BAD,
    GOOD,
)
