"""Dual-write semantics, proven on PostgreSQL through real runs of dual_write plans.

The writer decides the mapping (issue 11): an old-version write (no `zdm.writer`) gets `set`
on INSERT and UPDATE, whatever the new columns were given; a new-version write
(`zdm.writer = 'new'`, or an UPDATE that changes a new column itself) gets `reverse`. Trigger
and function appear and disappear together; a drop_column that removes what the trigger reads
removes the trigger in the same transaction, so no write fails in between.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from ops_support import BASE_DDL, Writer, scalar, write_plan

from zdm import api

Conn = psycopg.Connection[Any]

PEOPLE = '''
CREATE TABLE people (
    id int PRIMARY KEY,
    first text,
    last text,
    full_name text,
    email text,
    email_v2 text,
    "Nick ""N""" text,
    old text,
    new text,
    found text
);
INSERT INTO people (id, first, last, email) VALUES (1, 'Ada', 'Lovelace', 'ada@example.com');
'''


@pytest.fixture
def people(conn: Conn) -> Conn:
    conn.execute(PEOPLE)
    return conn


def run(tmp_path: Path, dsn: str, phases: str, name: str = "dw") -> Path:
    plan = write_plan(tmp_path / f"{name}.yaml", phases, name=name)
    out = api.run_plan(plan, dsn)
    assert (out.status, out.exit_code) == ("completed", 0), out.message
    return plan


def row(conn: Conn, pk: int, columns: str) -> tuple[Any, ...]:
    found = conn.execute(f"SELECT {columns} FROM people WHERE id = %s", [pk]).fetchone()
    assert found is not None
    return tuple(found)


FULL_NAME = """
dual_write:
  - dual_write: {table: people, set: {full_name: "first || ' ' || last"}}
"""

SPLIT = """
dual_write:
  - dual_write:
      table: people
      set: {full_name: "first || ' ' || last"}
      reverse: {first: "split_part(full_name, ' ', 1)", last: "split_part(full_name, ' ', 2)"}
"""

RENAME = """
dual_write:
  - dual_write: {table: people, set: {email_v2: email}, reverse: {email: email_v2}}
"""


def new_version(conn: Conn) -> None:
    """The session writes as the new application version from now on."""
    conn.execute("SET zdm.writer = 'new'")


def test_an_old_version_insert_gets_the_mapped_value_whatever_it_gave(
    people: Conn, dsn: str, tmp_path: Path
) -> None:
    conn = people
    run(tmp_path, dsn, FULL_NAME)
    conn.execute("INSERT INTO people (id, first, last) VALUES (2, 'Alan', 'Turing')")
    conn.execute(
        "INSERT INTO people (id, first, last, full_name) VALUES (3, 'Grace', 'Hopper', 'Amazing Grace')"
    )
    conn.execute(
        "INSERT INTO people (id, first, last, full_name) VALUES (4, 'Edsger', 'Dijkstra', NULL)"
    )
    with conn.cursor().copy("COPY people (id, first, last) FROM STDIN") as copy:
        copy.write_row((5, "Barbara", "Liskov"))
    conn.execute(
        "INSERT INTO people (id, first, last) SELECT 10 + g, 'P', g::text FROM generate_series(1, 3) g"
    )
    new_version(conn)
    conn.execute(
        "INSERT INTO people (id, first, last, full_name) VALUES (6, 'Grace', 'Hopper', 'Amazing Grace')"
    )
    assert conn.execute("SELECT id, full_name FROM people WHERE id > 1 ORDER BY id").fetchall() == [
        (2, "Alan Turing"),
        (3, "Grace Hopper"),  # the old version does not know full_name: what it holds is mapped
        (4, "Edsger Dijkstra"),
        (5, "Barbara Liskov"),
        (6, "Amazing Grace"),  # the new version's own value is kept
        (11, "P 1"),
        (12, "P 2"),
        (13, "P 3"),
    ]


def test_update_recomputes_what_the_writer_did_not_change(
    people: Conn, dsn: str, tmp_path: Path
) -> None:
    conn = people
    run(tmp_path, dsn, FULL_NAME)
    # Row 1 predates the trigger: any update brings its mapped column in step.
    conn.execute("UPDATE people SET email = 'ada@lovelace.org' WHERE id = 1")
    assert row(conn, 1, "full_name") == ("Ada Lovelace",)
    conn.execute("UPDATE people SET first = 'Augusta Ada' WHERE id = 1")
    assert row(conn, 1, "full_name") == ("Augusta Ada Lovelace",)
    # A value the writer changed is the writer's, even together with a source column...
    conn.execute("UPDATE people SET first = 'A.', full_name = 'Countess of Lovelace' WHERE id = 1")
    assert row(conn, 1, "first, full_name") == ("A.", "Countess of Lovelace")
    conn.execute("UPDATE people SET full_name = NULL WHERE id = 1")
    assert row(conn, 1, "full_name") == (None,)
    # ...but a column set to its old value was not changed: it is recomputed.
    conn.execute("UPDATE people SET full_name = 'x' WHERE id = 1")
    conn.execute("UPDATE people SET last = 'King', full_name = full_name WHERE id = 1")
    assert row(conn, 1, "full_name") == ("A. King",)
    # Multi-row updates: every row.
    conn.execute("INSERT INTO people (id, first, last) VALUES (2, 'a', 'b'), (3, 'c', 'd')")
    conn.execute("UPDATE people SET last = upper(last) WHERE id IN (2, 3)")
    assert conn.execute(
        "SELECT full_name FROM people WHERE id IN (2, 3) ORDER BY id"
    ).fetchall() == [
        ("a B",),
        ("c D",),
    ]


def test_reverse_derives_the_old_columns_when_the_new_one_changes(
    people: Conn, dsn: str, tmp_path: Path
) -> None:
    conn = people
    run(tmp_path, dsn, SPLIT)
    conn.execute("UPDATE people SET full_name = 'Ada King' WHERE id = 1")
    assert row(conn, 1, "first, last, full_name") == ("Ada", "King", "Ada King")
    # The new version's write gets `reverse`, whatever it gave the old columns.
    conn.execute("UPDATE people SET full_name = 'Augusta Byron', first = 'Gussie' WHERE id = 1")
    assert row(conn, 1, "first, last, full_name") == ("Augusta", "Byron", "Augusta Byron")
    # A new-version insert: the old columns come from the new one.
    new_version(conn)
    conn.execute("INSERT INTO people (id, full_name) VALUES (2, 'Alan Turing')")
    conn.execute("RESET zdm.writer")
    assert row(conn, 2, "first, last, full_name") == ("Alan", "Turing", "Alan Turing")
    # An old-shape update still drives the new column.
    conn.execute("UPDATE people SET last = 'Mathison' WHERE id = 2")
    assert row(conn, 2, "first, last, full_name") == ("Alan", "Mathison", "Alan Mathison")


def test_rename_style_mapping_keeps_both_columns_in_step_for_old_and_new_writers(
    people: Conn, dsn: str, tmp_path: Path
) -> None:
    conn = people
    run(tmp_path, dsn, RENAME)

    def in_step() -> None:
        assert (
            scalar(conn, "SELECT count(*) FROM people WHERE email IS DISTINCT FROM email_v2") == 0
        )

    conn.execute("UPDATE people SET first = 'Ada' WHERE id = 1")  # a row from before the trigger
    in_step()
    conn.execute("INSERT INTO people (id, email) VALUES (2, 'old@writer')")
    new_version(conn)
    conn.execute("INSERT INTO people (id, email_v2) VALUES (3, 'new@writer')")
    conn.execute("RESET zdm.writer")
    in_step()
    assert row(conn, 3, "email, email_v2") == ("new@writer", "new@writer")
    conn.execute("UPDATE people SET email = 'old@again' WHERE id = 3")
    assert row(conn, 3, "email, email_v2") == ("old@again", "old@again")
    conn.execute("UPDATE people SET email_v2 = 'new@again' WHERE id = 2")
    assert row(conn, 2, "email, email_v2") == ("new@again", "new@again")
    conn.execute("UPDATE people SET last = 'x' WHERE id IN (2, 3)")
    conn.execute("UPDATE people SET email_v2 = NULL WHERE id = 2")
    in_step()
    conn.execute("INSERT INTO people (id, email, email_v2) VALUES (4, 'same', 'same')")
    in_step()


def test_quoted_columns_and_columns_named_like_plpgsql_variables(
    people: Conn, dsn: str, tmp_path: Path
) -> None:
    # old, new and found are also PL/pgSQL variables inside a trigger; "Nick ""N""" needs quotes.
    conn = people
    run(
        tmp_path,
        dsn,
        """
        dual_write:
          - dual_write:
              table: people
              set: {new: upper(old), 'Nick "N"': "old || '/' || found"}
              reverse: {old: lower(new)}
        """,
    )
    conn.execute("INSERT INTO people (id, old, found) VALUES (2, 'abc', 'f')")
    assert row(conn, 2, 'new, "Nick ""N"""') == ("ABC", "abc/f")
    # The new version's write gets `reverse` only: the new columns are as it left them.
    conn.execute("UPDATE people SET new = 'XYZ' WHERE id = 2")
    assert row(conn, 2, 'old, new, "Nick ""N"""') == ("xyz", "XYZ", "abc/f")
    conn.execute("UPDATE people SET found = 'g' WHERE id = 2")
    assert row(conn, 2, 'old, new, "Nick ""N"""') == ("xyz", "XYZ", "xyz/g")


def catalog_watch(dsn: str, name: str, stop: threading.Event, seen: set[tuple[bool, bool]]) -> None:
    with psycopg.connect(dsn, autocommit=True) as watch:
        while not stop.is_set():
            # Both from table scans under the statement's snapshot: to_regprocedure() would use
            # the catalog cache, which may be newer than the snapshot that reads pg_trigger.
            state = watch.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = %s),"
                " EXISTS (SELECT 1 FROM pg_proc WHERE proname = %s)",
                [name, name],
            ).fetchone()
            assert state is not None
            seen.add((state[0], state[1]))


def test_trigger_and_function_are_created_and_dropped_together(
    conn: Conn, dsn: str, tmp_path: Path
) -> None:
    conn.execute(BASE_DDL)
    plan = write_plan(
        tmp_path / "dw.yaml",
        """
        additive:
          - add_column: {table: items, column: {name: name_upper, type: text}}
        dual_write:
          - dual_write: {table: items, set: {name_upper: upper(name)}}
        cleanup:
          - drop_dual_write: {table: items}
        """,
    )
    stop = threading.Event()
    seen: set[tuple[bool, bool]] = set()
    watcher = threading.Thread(target=catalog_watch, args=(dsn, "zdm_dw_items", stop, seen))
    watcher.start()
    try:
        with Writer(dsn) as writer:
            for _ in range(2):
                assert api.run_plan(plan, dsn, until="dual_read").status == "waiting"
                assert api.run_plan(plan, dsn).status == "completed"
                assert api.rollback(plan, dsn).status == "rolled_back"
    finally:
        stop.set()
        watcher.join(10)
    assert (True, True) in seen
    assert (False, False) in seen
    assert seen <= {(True, True), (False, False)}, "a moment with half of the dual write"
    writer.check_rows(conn)


@pytest.mark.parametrize("expression", ["upper(spare)", "UPPER(SPARE)", 'upper("spare")'])
def test_drop_column_drops_the_trigger_that_reads_it_with_no_failed_write(
    conn: Conn, dsn: str, tmp_path: Path, expression: str
) -> None:
    conn.execute(BASE_DDL)
    plan = write_plan(
        tmp_path / "dw.yaml",
        f"""
        additive:
          - add_column: {{table: items, column: {{name: spare_upper, type: text}}}}
        dual_write:
          - dual_write: {{table: items, set: {{spare_upper: '{expression}'}}}}
        cleanup:
          - drop_column: {{table: items, column: spare}}
        """,
    )
    with Writer(dsn) as writer:
        assert api.run_plan(plan, dsn, until="dual_read").status == "waiting"
        writer.wait_ops(10)
        assert api.run_plan(plan, dsn).status == "completed"
        writer.wait_ops(10)
    writer.check_rows(conn)  # no write failed on a trigger reading a dropped column
    assert scalar(conn, "SELECT count(*) FROM pg_trigger WHERE tgname = 'zdm_dw_items'") == 0
    assert scalar(conn, "SELECT to_regprocedure('public.zdm_dw_items()')") is None
    assert (
        scalar(
            conn,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'spare'",
        )
        == 0
    )


def test_backfill_through_a_lossy_reverse_mapping_leaves_the_old_column_alone(
    conn: Conn, dsn: str, tmp_path: Path
) -> None:
    # A type change: the backfill's own UPDATE of the new column is not a new-shape writer, so
    # it must not derive the old column back (cents lose the third decimal old code still reads).
    conn.execute("CREATE TABLE prices (id int PRIMARY KEY, price numeric, price_cents bigint)")
    conn.execute(
        "INSERT INTO prices (id, price) VALUES (1, 1.234), (2, 2.5), (3, 9.999), (4, NULL)"
    )
    before = conn.execute("SELECT id, price::text FROM prices ORDER BY id").fetchall()
    run(
        tmp_path,
        dsn,
        """
        dual_write:
          - dual_write:
              table: prices
              set: {price_cents: round(price * 100)::bigint}
              reverse: {price: price_cents / 100.0}
        backfill:
          - backfill: {table: prices, batch_size: 2}
        """,
    )
    assert conn.execute("SELECT id, price::text FROM prices ORDER BY id").fetchall() == before
    assert conn.execute("SELECT id, price_cents FROM prices ORDER BY id").fetchall() == [
        (1, 123),
        (2, 250),
        (3, 1000),
        (4, None),
    ]
    # New-shape writers still drive the old column; old-shape writers the new one.
    conn.execute("UPDATE prices SET price_cents = 700 WHERE id = 1")
    assert row_of(conn, "prices", 1, "price, price_cents") == (7, 700)
    conn.execute("UPDATE prices SET price = 0.129 WHERE id = 1")
    assert row_of(conn, "prices", 1, "price::text, price_cents") == ("0.129", 13)
    # Setting the new column to what the old one already maps to changes nothing else.
    conn.execute("UPDATE prices SET price_cents = 13 WHERE id = 1")
    assert row_of(conn, "prices", 1, "price::text, price_cents") == ("0.129", 13)


def row_of(conn: Conn, table: str, pk: int, columns: str) -> tuple[Any, ...]:
    found = conn.execute(f"SELECT {columns} FROM {table} WHERE id = %s", [pk]).fetchone()
    assert found is not None
    return tuple(found)
