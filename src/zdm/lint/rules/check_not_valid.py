"""check-without-not-valid: a CHECK constraint added to an existing table without NOT VALID.

Without NOT VALID, PostgreSQL scans every row to prove the constraint while it holds the ACCESS
EXCLUSIVE lock of the ALTER TABLE. Added NOT VALID it only checks new writes; a later
``VALIDATE CONSTRAINT`` scans under SHARE UPDATE EXCLUSIVE, which blocks no reads or writes.
A CHECK written inline in ``ADD COLUMN`` cannot be NOT VALID: add the column, then the check.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import enums

from zdm.lint.analysis import alter_commands, constraints_of, enforced, not_valid, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example("ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total > 0);"),
    Example("ALTER TABLE orders ADD COLUMN discount int CHECK (discount >= 0);"),
)
GOOD = (
    Example("ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total > 0) NOT VALID;"),
    Example("ALTER TABLE orders VALIDATE CONSTRAINT orders_total_positive;"),
    Example(
        "CREATE TABLE coupons (id bigint PRIMARY KEY, pct int);\n"
        "ALTER TABLE coupons ADD CONSTRAINT coupons_pct CHECK (pct BETWEEN 0 AND 100);"
    ),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    for rel, cmd, kind in alter_commands(stmt.node):
        if ctx.is_new(rel) or kind not in ("AT_AddConstraint", "AT_AddColumn"):
            continue
        table = table_name(rel)
        for con in constraints_of(cmd):
            if con.contype is not enums.ConstrType.CONSTR_CHECK or not enforced(con):
                continue
            if not_valid(con):
                continue
            name = f" {con.conname}" if con.conname else ""
            inline = kind == "AT_AddColumn"
            yield Problem(
                f"{'ADD COLUMN with an inline CHECK' if inline else 'ADD CONSTRAINT' + name + ' CHECK'}"
                f" scans all of {table} to check existing rows while holding an ACCESS "
                f"EXCLUSIVE lock on it: every read and write of {table} waits for the scan",
                ("add the column without the CHECK first, then " if inline else "")
                + "ADD CONSTRAINT ... CHECK (...) NOT VALID, and VALIDATE CONSTRAINT in a "
                "separate transaction (SHARE UPDATE EXCLUSIVE: reads and writes continue); "
                "in a zdm plan: add_check",
                at=con.location if con.location is not None and con.location >= 0 else None,
            )


RULE = Rule(
    "check-without-not-valid",
    Severity.error,
    "CHECK constraint added without NOT VALID",
    check,
    BAD,
    GOOD,
)
