"""validate_constraint of a constraint that existed NOT VALID before the plan: rollback makes it
NOT VALID again, definition unchanged (CHECK and FOREIGN KEY)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from zdm import api

PLAN = """version: 1
phases:
  dual_read:
    - validate_constraint: {table: items, name: qty_small}
    - validate_constraint: {table: items, name: items_parent}
"""


def constraints(conn: psycopg.Connection[Any]) -> list[tuple[str, bool, str]]:
    return conn.execute(
        "SELECT conname, convalidated, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'items'::regclass AND contype IN ('c', 'f') ORDER BY conname"
    ).fetchall()


def test_rollback_of_validate_makes_the_constraint_not_valid_again(
    conn: psycopg.Connection[Any], dsn: str, tmp_path: Path
) -> None:
    conn.execute(
        "CREATE TABLE parents (id int PRIMARY KEY); INSERT INTO parents VALUES (1);"
        " CREATE TABLE items (id int PRIMARY KEY, qty int, parent int);"
        " INSERT INTO items VALUES (1, 5, 1), (2, 7, NULL);"
        " ALTER TABLE items ADD CONSTRAINT qty_small CHECK (qty < 1000) NOT VALID;"
        " ALTER TABLE items ADD CONSTRAINT items_parent FOREIGN KEY (parent) REFERENCES parents"
        " ON DELETE SET NULL NOT VALID"
    )
    before = constraints(conn)
    assert [validated for _, validated, _ in before] == [False, False]
    plan = tmp_path / "validate.yaml"
    plan.write_text(PLAN)

    assert api.run_plan(plan, dsn).status == "completed"
    assert [validated for _, validated, _ in constraints(conn)] == [True, True]

    assert api.rollback(plan, dsn).status == "rolled_back"
    assert constraints(conn) == before
