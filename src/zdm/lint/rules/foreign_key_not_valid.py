"""foreign-key-without-not-valid: a FOREIGN KEY added to an existing table without NOT VALID.

Adding a foreign key checks every existing row against the referenced table while it holds
SHARE ROW EXCLUSIVE locks on both tables, so writes to both wait for the whole scan (an inline
``REFERENCES`` in ``ADD COLUMN`` also holds ACCESS EXCLUSIVE on the table). Added NOT VALID,
only new rows are checked; ``VALIDATE CONSTRAINT`` later scans without blocking writes.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import enums

from zdm.lint.analysis import alter_commands, constraints_of, enforced, not_valid, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example(
        "ALTER TABLE orders ADD CONSTRAINT orders_user_fk "
        "FOREIGN KEY (user_id) REFERENCES users (id);"
    ),
    Example("ALTER TABLE orders ADD COLUMN coupon_id bigint REFERENCES coupons (id);"),
)
GOOD = (
    Example(
        "ALTER TABLE orders ADD CONSTRAINT orders_user_fk "
        "FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n"
    ),
    Example(
        "CREATE TABLE payments (id bigint PRIMARY KEY, order_id bigint REFERENCES orders (id));"
    ),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    for rel, cmd, kind in alter_commands(stmt.node):
        if ctx.is_new(rel) or kind not in ("AT_AddConstraint", "AT_AddColumn"):
            continue
        table = table_name(rel)
        for con in constraints_of(cmd):
            if con.contype is not enums.ConstrType.CONSTR_FOREIGN or not enforced(con):
                continue
            if not_valid(con):
                continue
            target = table_name(con.pktable) if con.pktable is not None else "its target"
            inline = kind == "AT_AddColumn"
            lock = (
                f"an ACCESS EXCLUSIVE lock on {table} (every read and write waits)"
                if inline
                else f"SHARE ROW EXCLUSIVE locks on {table}"
            )
            yield Problem(
                f"adding a foreign key to {target} checks every existing row of {table} while "
                f"holding {lock} and on {target}: writes to both tables wait for the whole scan",
                ("add the column without REFERENCES first, then " if inline else "")
                + "ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID, and VALIDATE CONSTRAINT in a "
                "separate transaction (reads and writes continue); in a zdm plan: "
                "add_foreign_key",
                at=con.location if con.location is not None and con.location >= 0 else None,
            )


RULE = Rule(
    "foreign-key-without-not-valid",
    Severity.error,
    "FOREIGN KEY added without NOT VALID",
    check,
    BAD,
    GOOD,
)
