"""exclusion-constraint: an exclusion constraint added to an existing table.

``ADD CONSTRAINT ... EXCLUDE`` builds its index while holding ACCESS EXCLUSIVE, and unlike
CHECK, FOREIGN KEY and UNIQUE there is no NOT VALID or USING INDEX form to split the work.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import enums

from zdm.lint.analysis import alter_commands, constraints_of, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example(
        "ALTER TABLE bookings ADD CONSTRAINT bookings_no_overlap "
        "EXCLUDE USING gist (room_id WITH =, during WITH &&);"
    ),
)
GOOD = (
    Example(
        "CREATE TABLE slots (room_id int, during tstzrange);\n"
        "ALTER TABLE slots ADD CONSTRAINT slots_no_overlap "
        "EXCLUDE USING gist (room_id WITH =, during WITH &&);"
    ),
)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    for rel, cmd, kind in alter_commands(stmt.node):
        if kind != "AT_AddConstraint" or ctx.is_new(rel):
            continue
        for con in constraints_of(cmd):
            if con.contype is not enums.ConstrType.CONSTR_EXCLUSION:
                continue
            table = table_name(rel)
            yield Problem(
                f"adding an exclusion constraint builds its index while holding an ACCESS "
                f"EXCLUSIVE lock on {table}: every read and write waits for the whole build, "
                "and there is no NOT VALID or USING INDEX form to avoid it",
                "create a new table with the constraint and migrate the data into it "
                "(dual_write + backfill), or enforce the rule in a trigger; zdm has no online "
                "step for exclusion constraints",
            )


RULE = Rule(
    "exclusion-constraint",
    Severity.error,
    "exclusion constraint added to an existing table",
    check,
    BAD,
    GOOD,
)
