"""rename-column: renaming a column breaks the application code that still uses the old name.

The rename itself is catalog-only, but from its commit on every query, prepared statement and
ORM mapping that names the old column fails; during a rolling deploy old and new code run
together, so no single moment is right. In a zdm plan a rename belongs to the cleanup phase,
after the application has stopped using the old name (sql steps in cleanup are not reported).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from zdm.lint.analysis import table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (Example("ALTER TABLE users RENAME COLUMN email TO email_address;"),)
GOOD = (
    Example(
        "CREATE TABLE drafts (id bigint PRIMARY KEY, titel text);\n"
        "ALTER TABLE drafts RENAME COLUMN titel TO title;"
    ),
    Example("ALTER INDEX users_email_idx RENAME TO users_email_address_idx;"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if (
        not isinstance(node, ast.RenameStmt)
        or node.renameType is not enums.ObjectType.OBJECT_COLUMN
        or node.relation is None
        or ctx.is_new(node.relation)
        or ctx.phase == "cleanup"
    ):
        return
    table = table_name(node.relation)
    yield Problem(
        f"renaming {table}.{node.subname} to {node.newname} is catalog-only, but every query, "
        "prepared statement and ORM model of the running application that uses the old name "
        "fails from the moment it commits",
        "expand and contract: add the new column, keep both in step with dual_write (set and "
        "reverse), backfill, move the application, then drop the old column; in a zdm plan "
        "rename_column belongs to cleanup, after the application stopped using the old name",
    )


RULE = Rule(
    "rename-column",
    Severity.error,
    "column renamed while the application may use it",
    check,
    BAD,
    GOOD,
)
