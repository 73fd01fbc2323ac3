"""The conformance matrix of issue 11: every change kind that keeps two shapes, by every writer and
operation, by column situation, on a real PostgreSQL.

For each kind a table is migrated up to the plan's cleanup gate (the backfill, zdm's own writer,
brings the existing rows over); then the old version writes the base table (INSERT, UPDATE,
DELETE) and the new version writes through the `expose` views, each the same logical value in
its own shape. At the gate both shapes agree on every row; `rollback` keeps in the old shape
every value either version wrote; run again and `run --continue` keeps every value in the new
shape. Situations: plain values; defaults on the old and the new column (which neither version's
writes may let win over the mapping); NULLs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from zdm import api
from zdm.logs import configure

Conn = psycopg.Connection[Any]
Value = int | None


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> None:
    configure()


@dataclass(frozen=True)
class Kind:
    name: str
    setup: str  # {old_default}: a DEFAULT clause for the old column, or ''
    phases: str  # {new_default}: a set_default step for the new column, or ''
    old: dict[str, str]  # INSERT / UPDATE / DELETE by the old version on the base table
    new: dict[str, str]  # the same by the new version, through the views
    agree: str  # rows whose two shapes disagree
    read_old: str  # id, logical value, from the old shape (after rollback)
    read_new: str  # id, logical value, from the new shape (after the cleanup)
    old_value: Callable[[Value], Any] = lambda v: v
    new_value: Callable[[Value], Any] = lambda v: v
    old_default: str = ""
    new_default: str = ""  # the set_default step (YAML) for the defaults situation
    situations: tuple[str, ...] = ("plain", "defaults", "nulls")
    extra: dict[str, Any] = field(default_factory=dict)


def text_of(v: Value) -> str | None:
    return None if v is None else str(v)


def tagged(tag: str) -> Callable[[Value], str | None]:
    return lambda v: None if v is None else f"{tag}{v}"


def _dml(table: str, column: str) -> dict[str, str]:
    return {
        "insert": f"INSERT INTO {table} (id, {column}) VALUES (%(id)s, %(v)s)",
        "update": f"UPDATE {table} SET {column} = %(v)s WHERE id = %(id)s",
        "delete": f"DELETE FROM {table} WHERE id = %(id)s",
    }


KINDS = [
    Kind(
        "type_change",
        "CREATE TABLE reviews (id int PRIMARY KEY, rating text {old_default}, body text);"
        "INSERT INTO reviews (id, rating) SELECT i, i::text FROM generate_series(1, 30) i;",
        """
  additive:
    - add_column: {{table: reviews, column: {{name: rating_new, type: integer}}}}
{new_default}
  dual_write:
    - dual_write:
        table: reviews
        set: {{rating_new: CAST(rating AS integer)}}
        reverse: {{rating: CAST(rating_new AS text)}}
  backfill:
    - backfill: {{table: reviews, batch_size: 7}}
  dual_read:
    - expose:
        schema: app_v2
        tables: [{{table: reviews, hide: [rating], rename: {{rating_new: rating}}}}]
  cleanup:
    - unexpose: {{schema: app_v2}}
    - drop_dual_write: {{table: reviews}}
""",
        _dml("reviews", "rating"),
        _dml("reviews", "rating"),
        "SELECT count(*) FROM reviews WHERE rating_new IS DISTINCT FROM CAST(rating AS integer)",
        "SELECT id, CAST(rating AS integer) FROM reviews",
        "SELECT id, rating_new FROM reviews",
        old_value=text_of,
        old_default="DEFAULT '-5'",
        new_default="    - set_default: {table: reviews, column: rating_new, default: '-7'}",
    ),
    Kind(
        "rename_column",
        "CREATE TABLE staff (id int PRIMARY KEY, role text {old_default});"
        "INSERT INTO staff SELECT i, 'r' || i FROM generate_series(1, 30) i;",
        """
  dual_read:
    - expose:
        schema: app_v2
        tables: [{{table: staff, rename: {{role: job_title}}}}]
  cleanup:
    - rename_column: {{table: staff, column: role, to: job_title}}
    - unexpose: {{schema: app_v2}}
""",
        _dml("staff", "role"),
        _dml("staff", "job_title"),
        "SELECT 0",
        "SELECT id, substr(role, 2)::int FROM staff",
        "SELECT id, substr(job_title, 2)::int FROM staff",
        old_value=tagged("r"),
        new_value=tagged("r"),
        old_default="DEFAULT 'r-5'",
    ),
    Kind(
        "rename_table",
        "CREATE TABLE items (id int PRIMARY KEY, label text {old_default});"
        "INSERT INTO items SELECT i, 'l' || i FROM generate_series(1, 30) i;",
        """
  dual_read:
    - expose:
        schema: app_v2
        tables: [{{table: items, view: goods}}]
  cleanup:
    - rename_table: {{table: items, to: goods}}
    - unexpose: {{schema: app_v2}}
""",
        _dml("items", "label"),
        _dml("goods", "label"),
        "SELECT 0",
        "SELECT id, substr(label, 2)::int FROM public.items",
        "SELECT id, substr(label, 2)::int FROM public.goods",
        old_value=tagged("l"),
        new_value=tagged("l"),
        old_default="DEFAULT 'l-5'",
    ),
    Kind(
        "add_column_up",
        "CREATE TABLE prices (id int PRIMARY KEY, price int {old_default});"
        "INSERT INTO prices SELECT i, i FROM generate_series(1, 30) i;",
        """
  additive:
    - add_column: {{table: prices, column: {{name: price_x10, type: integer}}}}
{new_default}
  dual_write:
    - dual_write: {{table: prices, set: {{price_x10: price * 10}}}}
  backfill:
    - backfill: {{table: prices, batch_size: 7}}
  dual_read:
    - expose: {{schema: app_v2, tables: [{{table: prices}}]}}
  cleanup:
    - drop_dual_write: {{table: prices}}
    - unexpose: {{schema: app_v2}}
""",
        _dml("prices", "price"),
        {
            "insert": "INSERT INTO prices (id, price, price_x10) VALUES (%(id)s, %(v)s, %(v)s::int * 10)",
            "update": "UPDATE prices SET price = %(v)s, price_x10 = %(v)s::int * 10 WHERE id = %(id)s",
            "delete": "DELETE FROM prices WHERE id = %(id)s",
        },
        "SELECT count(*) FROM prices WHERE price_x10 IS DISTINCT FROM price * 10",
        "SELECT id, price FROM prices",
        "SELECT id, price_x10 / 10 FROM prices",
        old_default="DEFAULT -5",
        new_default="    - set_default: {table: prices, column: price_x10, default: '-70'}",
    ),
    Kind(
        "drop_column_down",
        "CREATE TABLE things (id int PRIMARY KEY, a int, legacy text {old_default});"
        "INSERT INTO things SELECT i, i, 'a=' || i FROM generate_series(1, 30) i;",
        """
  dual_write:
    - dual_write:
        table: things
        set: {{legacy: legacy}}
        reverse: {{legacy: "'a=' || a"}}
  dual_read:
    - expose: {{schema: app_v2, tables: [{{table: things, hide: [legacy]}}]}}
  cleanup:
    - unexpose: {{schema: app_v2}}
    - drop_dual_write: {{table: things}}
    - drop_column: {{table: things, column: legacy}}
""",
        {
            "insert": "INSERT INTO things (id, a, legacy) VALUES (%(id)s, %(v)s, 'a=' || %(v)s::int)",
            "update": "UPDATE things SET a = %(v)s, legacy = 'a=' || %(v)s::int WHERE id = %(id)s",
            "delete": "DELETE FROM things WHERE id = %(id)s",
        },
        _dml("things", "a"),
        "SELECT count(*) FROM things WHERE legacy IS DISTINCT FROM 'a=' || a",
        "SELECT id, a FROM things",
        "SELECT id, a FROM things",
        old_default="DEFAULT 'gone'",
    ),
    Kind(
        "set_unique_up",
        "CREATE TABLE accounts (id int PRIMARY KEY, email text {old_default});"
        "INSERT INTO accounts SELECT i, 'U' || i FROM generate_series(1, 30) i;",
        """
  additive:
    - add_column: {{table: accounts, column: {{name: email_u, type: text}}}}
    - create_index: {{table: accounts, name: accounts_email_u, columns: [email_u], unique: true}}
  dual_write:
    - dual_write:
        table: accounts
        set: {{email_u: lower(email)}}
        reverse: {{email: email_u}}
  backfill:
    - backfill: {{table: accounts, batch_size: 7}}
  dual_read:
    - expose:
        schema: app_v2
        tables: [{{table: accounts, hide: [email], rename: {{email_u: email}}}}]
  cleanup:
    - unexpose: {{schema: app_v2}}
    - drop_dual_write: {{table: accounts}}
""",
        _dml("accounts", "email"),
        _dml("accounts", "email"),
        "SELECT count(*) FROM accounts WHERE email_u IS DISTINCT FROM lower(email)",
        "SELECT id, substr(lower(email), 2)::int FROM accounts",
        "SELECT id, substr(email_u, 2)::int FROM accounts",
        old_value=tagged("U"),
        new_value=tagged("u"),
        old_default="DEFAULT 'U-5'",
    ),
    Kind(
        "set_not_null_up",
        "CREATE TABLE stock (id int PRIMARY KEY, qty int {old_default});"
        "INSERT INTO stock SELECT i, i FROM generate_series(1, 30) i;",
        """
  additive:
    - add_column: {{table: stock, column: {{name: qty_nn, type: integer}}}}
{new_default}
  dual_write:
    - dual_write:
        table: stock
        set: {{qty_nn: "coalesce(qty, 0)"}}
        reverse: {{qty: qty_nn}}
  backfill:
    - backfill: {{table: stock, batch_size: 7}}
  dual_read:
    - expose:
        schema: app_v2
        tables: [{{table: stock, hide: [qty], rename: {{qty_nn: qty}}}}]
  cleanup:
    - unexpose: {{schema: app_v2}}
    - drop_dual_write: {{table: stock}}
    - set_not_null: {{table: stock, column: qty_nn}}
""",
        _dml("stock", "qty"),
        _dml("stock", "qty"),
        "SELECT count(*) FROM stock WHERE qty_nn IS DISTINCT FROM coalesce(qty, 0)",
        "SELECT id, qty FROM stock",
        "SELECT id, qty_nn FROM stock",
        old_default="DEFAULT -5",
        new_default="    - set_default: {table: stock, column: qty_nn, default: '-7'}",
        situations=("plain", "defaults"),
    ),
]

# (writer, operation, id, value): the old version's writes, the new version's, and each
# version's write to a row the other one inserted.
OPS: list[tuple[str, str, int, Value]] = [
    ("old", "insert", 1001, 111),
    ("old", "update", 2, 112),
    ("old", "delete", 3, None),
    ("new", "insert", 1002, 113),
    ("new", "update", 4, 114),
    ("new", "delete", 5, None),
    ("new", "update", 1001, 115),
    ("old", "update", 1002, 116),
]
NULL_OPS: list[tuple[str, str, int, Value]] = [
    ("old", "update", 6, None),
    ("new", "update", 7, None),
    ("old", "insert", 1003, None),
    ("new", "insert", 1004, None),
]


def as_dict(conn: Conn, query: str) -> dict[int, Value]:
    return {row[0]: row[1] for row in conn.execute(query).fetchall()}


CASES = [
    pytest.param(kind, situation, id=f"{kind.name}-{situation}")
    for kind in KINDS
    for situation in kind.situations
]


@pytest.mark.parametrize(("kind", "situation"), CASES)
def test_both_shapes_agree_and_every_write_survives(
    conn: Conn, dsn: str, tmp_path: Path, kind: Kind, situation: str
) -> None:
    defaults = situation == "defaults"
    conn.execute(kind.setup.format(old_default=kind.old_default if defaults else ""))
    plan = tmp_path / f"{kind.name}.yaml"
    plan.write_text(
        f"version: 1\nname: {kind.name}\ngates: [cleanup]\nphases:"
        + kind.phases.format(new_default=kind.new_default if defaults else "")
    )
    model = as_dict(conn, kind.read_old)
    assert api.run_plan(plan, dsn).status == "waiting"
    assert conn.execute(kind.agree).fetchone() == (0,), "the backfill left the shapes apart"
    ops = OPS + (NULL_OPS if situation == "nulls" else [])
    with psycopg.connect(dsn, autocommit=True, options="-c search_path=app_v2,public") as new:
        for writer, op, row_id, value in ops:
            target, shape = (conn, kind.old) if writer == "old" else (new, kind.new)
            convert = kind.old_value if writer == "old" else kind.new_value
            target.execute(shape[op], {"id": row_id, "v": convert(value)})
            if op == "delete":
                model.pop(row_id)
            else:
                model[row_id] = value
            disagree = conn.execute(kind.agree).fetchone()
            assert disagree == (0,), f"after the {writer} version's {op} of row {row_id}"
    # Rolled back at the gate: the old shape holds every value either version wrote.
    outcome = api.rollback(plan, dsn)
    assert outcome.status == "rolled_back", outcome.message
    assert as_dict(conn, kind.read_old) == model
    # Run again and through the cleanup: the new shape holds every value.
    assert api.run_plan(plan, dsn).status == "waiting"
    assert api.run_plan(plan, dsn, cont=True).status == "completed"
    assert as_dict(conn, kind.read_new) == model


def test_any_sequence_of_writes_keeps_the_shapes_together(
    conn: Conn, dsn: str, tmp_path: Path
) -> None:
    """Property: whatever the two versions write, in any order (hypothesis picks the writer,
    the operation, the row and the value, NULL included), both shapes agree after every write
    and hold what the last writer of each row wrote."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    kind = KINDS[0]  # type_change: two columns, both mappings
    conn.execute(kind.setup.format(old_default=kind.old_default))
    plan = tmp_path / "prop.yaml"
    plan.write_text(
        "version: 1\nname: prop\ngates: [cleanup]\nphases:"
        + kind.phases.format(new_default=kind.new_default)
    )
    assert api.run_plan(plan, dsn).status == "waiting"
    new = psycopg.connect(dsn, autocommit=True, options="-c search_path=app_v2,public")
    op = st.tuples(
        st.sampled_from(["old", "new"]),
        st.sampled_from(["insert", "update", "delete"]),
        st.integers(1, 40),
        st.one_of(st.none(), st.integers(-1000, 1000)),
    )

    @settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(st.lists(op, max_size=12))
    def writes(ops: list[tuple[str, str, int, Value]]) -> None:
        model = as_dict(conn, kind.read_old)
        for writer, action, row_id, value in ops:
            if (action == "insert") == (row_id in model):
                continue  # an INSERT of a row that exists, or a write to one that does not
            target, shape = (conn, kind.old) if writer == "old" else (new, kind.new)
            convert = kind.old_value if writer == "old" else kind.new_value
            target.execute(shape[action], {"id": row_id, "v": convert(value)})
            if action == "delete":
                model.pop(row_id)
            else:
                model[row_id] = value
            assert conn.execute(kind.agree).fetchone() == (0,), (writer, action, row_id)
        assert as_dict(conn, kind.read_old) == model
        assert as_dict(conn, kind.read_new) == model

    try:
        writes()
    finally:
        new.close()
