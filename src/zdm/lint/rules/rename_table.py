"""rename-table: renaming a table breaks every query that still uses the old name.

Catalog-only, but the running application's queries fail from its commit on. Keep the old name
reachable (a view named like the old table that selects from the new one is updatable for simple
tables), move the application, then drop the view. zdm plans rename tables only in cleanup.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, enums

from zdm.lint.analysis import table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (Example("ALTER TABLE users RENAME TO accounts;"),)
GOOD = (
    Example("CREATE TABLE tmp_users (id bigint);\nALTER TABLE tmp_users RENAME TO new_users;"),
    Example("ALTER TABLE users RENAME CONSTRAINT users_email_check TO users_email_format;"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if (
        not isinstance(node, ast.RenameStmt)
        or node.renameType is not enums.ObjectType.OBJECT_TABLE
        or node.relation is None
        or ctx.is_new(node.relation)
        or ctx.phase == "cleanup"
    ):
        return
    table = table_name(node.relation)
    yield Problem(
        f"renaming {table} to {node.newname} is catalog-only, but every query of the running "
        f"application that names {table} fails from the moment it commits",
        f"rename it and create a view named {table} over the new name in the same transaction, "
        "move the application, then drop the view; in a zdm plan rename_table belongs to "
        "cleanup, after the application stopped using the old name",
    )


RULE = Rule(
    "rename-table",
    Severity.error,
    "table renamed while the application may use it",
    check,
    BAD,
    GOOD,
)
