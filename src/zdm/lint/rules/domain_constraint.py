"""domain-constraint-scan: ``ALTER DOMAIN ... ADD CONSTRAINT`` without NOT VALID, or ``SET NOT
NULL``, checks every column of that type.

PostgreSQL proves the new constraint against every row of every table with a column of the
domain, holding a SHARE lock on each table meanwhile: no INSERT, UPDATE or DELETE on any of them
until every scan is done. Added NOT VALID, a CHECK only applies to new values; ``ALTER DOMAIN
... VALIDATE CONSTRAINT`` then proves the old ones without blocking writes.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example("ALTER DOMAIN positive_amount ADD CONSTRAINT amount_positive CHECK (VALUE > 0);"),
    Example("ALTER DOMAIN email_address SET NOT NULL;"),
)
GOOD = (
    Example(
        "ALTER DOMAIN positive_amount ADD CONSTRAINT amount_positive CHECK (VALUE > 0) NOT VALID;"
    ),
    Example("ALTER DOMAIN positive_amount VALIDATE CONSTRAINT amount_positive;"),
    Example("CREATE DOMAIN positive_amount AS numeric CHECK (VALUE > 0);"),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if not isinstance(node, ast.AlterDomainStmt):
        return
    name = ".".join(n.sval for n in node.typeName or () if isinstance(n, ast.String) and n.sval)
    con = node.def_
    if node.subtype == "C" and isinstance(con, ast.Constraint) and not con.skip_validation:
        yield Problem(
            f"ALTER DOMAIN {name} ADD CONSTRAINT checks every value of every column of type "
            f"{name}, holding a SHARE lock on each of their tables: writes to all of them wait "
            "for the whole scan",
            "add it NOT VALID (new values are checked), then ALTER DOMAIN ... VALIDATE "
            "CONSTRAINT, which does not block writes",
        )
    elif node.subtype == "O":
        yield Problem(
            f"ALTER DOMAIN {name} SET NOT NULL checks every column of type {name}, holding a "
            "SHARE lock on each of their tables: writes to all of them wait for the whole scan",
            f"add CONSTRAINT … CHECK (VALUE IS NOT NULL) NOT VALID to {name}, then VALIDATE it",
        )


RULE = Rule(
    "domain-constraint-scan",
    Severity.error,
    "ALTER DOMAIN ... ADD CONSTRAINT without NOT VALID, or SET NOT NULL",
    check,
    BAD,
    GOOD,
)
