"""concurrently-on-partitioned: CREATE INDEX CONCURRENTLY on a partitioned table.

PostgreSQL refuses it (`cannot create index on partitioned table … concurrently`, SQLSTATE
0A000), so the migration fails there; a plain CREATE INDEX instead holds a SHARE lock on every
partition for the whole build. The table is known to be partitioned from an earlier migration
(`PARTITION BY`) or, with `zdm lint --dsn`, from the live catalog.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.analysis import table_key, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

_EVENTS = "CREATE TABLE events (id bigint, at date, kind text) PARTITION BY RANGE (at);"
BAD = (Example("CREATE INDEX CONCURRENTLY events_kind_idx ON events (kind);", _EVENTS),)
GOOD = (
    Example("CREATE INDEX CONCURRENTLY users_email_idx ON users (email);"),
    Example("CREATE INDEX events_kind_idx ON ONLY events (kind);", _EVENTS),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if not (isinstance(node, ast.IndexStmt) and node.concurrent and node.relation is not None):
        return
    model = ctx.state.schema.tables.get(table_key(node.relation))
    if model is None or not model.partitioned or not node.relation.inh:
        return
    table = table_name(node.relation)
    yield Problem(
        f"{table} is partitioned: PostgreSQL refuses CREATE INDEX CONCURRENTLY on it"
        " (SQLSTATE 0A000), and without CONCURRENTLY every write to every partition waits"
        " for the whole build",
        "a zdm create_index step, which builds it partition by partition: CREATE INDEX … ON"
        " ONLY the parent, CREATE INDEX CONCURRENTLY on each partition, ALTER INDEX … ATTACH"
        " PARTITION",
    )


RULE = Rule(
    "concurrently-on-partitioned",
    Severity.error,
    "CREATE INDEX CONCURRENTLY on a partitioned table (PostgreSQL refuses it)",
    check,
    BAD,
    GOOD,
)
