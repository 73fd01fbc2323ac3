"""validate-in-same-transaction: VALIDATE CONSTRAINT in the transaction that added it NOT VALID.

NOT VALID exists so that the lock of ``ADD CONSTRAINT`` (ACCESS EXCLUSIVE for a CHECK, SHARE
ROW EXCLUSIVE for a foreign key) is held only for an instant. Validating in the same
transaction keeps that lock for the whole validating scan, which blocks traffic exactly as if
NOT VALID had not been written. This can happen in a .sql file or in a plan's ``sql`` step;
zdm's add_check and add_foreign_key commit in between.
"""

from __future__ import annotations

from collections.abc import Iterator

from zdm.lint.analysis import alter_commands, table_key, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example(
        "SET lock_timeout = '2s';\n"
        "BEGIN;\n"
        "ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total > 0) NOT VALID;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT orders_total_positive;\n"
        "COMMIT;"
    ),
    Example(
        "SET lock_timeout = '2s';\n"
        "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) "
        "REFERENCES users (id) NOT VALID;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;"
    ),
)
GOOD = (
    Example(
        "SET lock_timeout = '2s';\n"
        "BEGIN;\n"
        "ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total > 0) NOT VALID;\n"
        "COMMIT;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT orders_total_positive;"
    ),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    if ctx.txn is None:
        return
    for rel, cmd, kind in alter_commands(stmt.node):
        if kind != "AT_ValidateConstraint" or not cmd.name:
            continue
        line = ctx.state.not_valid.get((table_key(rel), cmd.name))
        if line is None:
            continue
        table = table_name(rel)
        yield Problem(
            f"VALIDATE CONSTRAINT {cmd.name} runs in the transaction that added it NOT VALID "
            f"(line {line}), which still holds that statement's lock on {table}: the "
            "validating scan blocks traffic as if NOT VALID had not been used",
            "commit after ADD CONSTRAINT ... NOT VALID and validate in a new transaction; in a "
            "zdm plan: add_check / add_foreign_key do exactly that",
        )


RULE = Rule(
    "validate-in-same-transaction",
    Severity.error,
    "VALIDATE in the same transaction as its NOT VALID",
    check,
    BAD,
    GOOD,
)
