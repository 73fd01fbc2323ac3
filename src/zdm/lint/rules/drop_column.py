"""drop-column: dropping a column that the running application may still use.

``DROP COLUMN`` is catalog-only, but queries that name the column fail at once, ORMs that list
all columns fail too, and the data is gone: no rollback brings it back. The application must
stop using the column first; in a zdm plan the drop belongs to cleanup (sql steps in cleanup
are not reported).
"""

from __future__ import annotations

from collections.abc import Iterator

from zdm.lint.analysis import alter_commands, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (Example("ALTER TABLE users DROP COLUMN legacy_phone;"),)
GOOD = (
    Example("CREATE TABLE scratch (id bigint, tmp text);\nALTER TABLE scratch DROP COLUMN tmp;"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    if ctx.phase == "cleanup":
        return
    for rel, cmd, kind in alter_commands(stmt.node):
        if kind != "AT_DropColumn" or ctx.is_new(rel):
            continue
        table = table_name(rel)
        yield Problem(
            f"dropping {table}.{cmd.name}: queries and ORM models of the running application "
            "that use it fail at once, and its data cannot be brought back",
            "stop using the column in the application first (ORMs: ignore it), then drop it "
            "in a later migration; in a zdm plan: drop_column in the cleanup phase",
        )


RULE = Rule(
    "drop-column",
    Severity.error,
    "column dropped while the application may use it",
    check,
    BAD,
    GOOD,
)
