"""Rows a mapping cannot convert: the backfill names them, passes over them, and takes them
again once they are fixed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
from zdm_helpers import add_phone, mismatched_phones, scalar, seed, write_plan, zdm

TOO_LONG = "+1 (555) 0100-2000-3000-4000 ext 12345"  # 26 characters once normalised


def _break(conn: psycopg.Connection[Any], ids: list[int]) -> None:
    """Legacy phones longer than the new varchar(20) column once normalised."""
    conn.execute(
        "UPDATE users SET contact = jsonb_set(contact, '{phone}', to_jsonb(%s::text))"
        " WHERE id = ANY(%s)",
        [TOO_LONG, ids],
    )


def _fix_behind_the_trigger(dsn: str, ids: list[int]) -> None:
    """Fixes the rows with triggers off, so that only the resumed backfill can fill them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE users SET contact = jsonb_set(contact, '{phone}', '\"+1 555 010 0200\"')"
            " WHERE id = ANY(%s)",
            [ids],
        )


def test_the_backfill_names_the_rows_it_cannot_convert_and_takes_them_after_a_fix(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    seed(dsn, 3000)
    bad = [7, 1500, 1501, 2999]
    _break(conn, bad)
    plan = write_plan(
        tmp_path / "add_phone.yaml", add_phone(backfill={"batch_size": 500, "batch_time": "1s"})
    )

    failed = zdm("run", plan, "--dsn", dsn)
    assert failed.returncode == 1, failed.stderr
    assert "4 row(s) of public.users cannot be mapped" in failed.stderr
    assert "id=7, id=1500, id=1501, id=2999" in failed.stderr
    assert "value too long for type character varying(20)" in failed.stderr
    # Every other row was filled; the bad ones were passed over, not half-written.
    assert scalar(conn, "SELECT count(*) FROM users WHERE phone IS NULL") == len(bad)
    recorded = conn.execute(
        "SELECT row_key, sqlstate, source, table_name FROM zdm.mapping_errors ORDER BY id"
    ).fetchall()
    assert [r[0] for r in recorded] == [{"id": str(i)} for i in bad]
    assert {(r[1], r[2], r[3]) for r in recorded} == {("22001", "backfill", "public.users")}

    status = zdm("status", "--json", "--dsn", dsn)
    (run,) = json.loads(status.stdout)
    assert run["bad_rows"]["count"] == len(bad)
    text = zdm("status", "--dsn", dsn)
    assert "rows the mapping cannot convert: 4" in text.stdout and "id=1500" in text.stdout

    # Resumed before the fix: the same rows, named again, nothing else done twice.
    again = zdm("run", plan, "--dsn", dsn)
    assert again.returncode == 1 and "id=7, id=1500, id=1501, id=2999" in again.stderr
    assert scalar(conn, "SELECT count(*) FROM zdm.mapping_errors") == len(bad)

    _fix_behind_the_trigger(dsn, bad)
    done = zdm("run", plan, "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    assert mismatched_phones(conn) == 0
    assert scalar(conn, "SELECT count(*) FROM zdm.mapping_errors") == 0


def test_a_mapping_that_fails_on_every_row_is_the_expression_not_the_data(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    seed(dsn, 300)
    plan = add_phone(backfill={"batch_size": 100, "batch_time": "1s"})
    plan["phases"]["backfill"][0]["backfill"]["set"] = {
        "phone": "repeat('9', 20 + length(email) / length(email))"
    }
    path = write_plan(tmp_path / "add_phone.yaml", plan)

    failed = zdm("run", path, "--dsn", dsn)
    assert failed.returncode == 1, failed.stderr
    assert "value too long" in failed.stderr and "cannot be mapped" not in failed.stderr
    assert scalar(conn, "SELECT count(*) FROM zdm.mapping_errors") == 0


def test_validate_scan_finds_the_rows_in_advance_and_changes_nothing(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    seed(dsn, 2500)
    plan = write_plan(tmp_path / "add_phone.yaml", add_phone())
    clean = zdm("validate", plan, "--dsn", dsn, "--scan")
    assert clean.returncode == 0, clean.stderr
    assert "set.phone (public.users.phone): 2500 rows, all convert" in clean.stdout

    bad = [1, 1234, 2500]
    _break(conn, bad)
    scanned = zdm("validate", plan, "--dsn", dsn, "--scan")
    assert scanned.returncode == 1, scanned.stderr
    assert "3 of 2500 rows cannot be converted: id=1, id=1234, id=2500" in scanned.stdout
    assert "value too long for type character varying(20)" in scanned.stdout
    assert "3 rows cannot be converted" in scanned.stderr
    # Read-only: no column, no state schema, no temporary table left.
    assert not scalar(
        conn,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'users'::regclass"
        " AND attname = 'phone'",
    )
    assert scalar(conn, "SELECT to_regnamespace('zdm')") is None

    usage = zdm("validate", plan, "--scan")
    assert usage.returncode == 2 and "--scan needs a database" in usage.stderr


QTY_PLAN = {
    "version": 1,
    "name": "qty",
    "phases": {
        "additive": [{"add_column": {"table": "Orders", "column": {"name": "Qty", "type": "int"}}}],
        "dual_write": [
            {"dual_write": {"table": "Orders", "set": {"Qty": 'CAST("qtyText" AS integer)'}}}
        ],
        "backfill": [{"backfill": {"table": "Orders", "batch_size": 64, "batch_time": "1s"}}],
    },
}


def test_a_bad_cast_under_a_composite_key_of_a_mixed_case_table(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    conn.execute(
        'CREATE TABLE "Orders" (region text, id int, "qtyText" text NOT NULL,'
        " PRIMARY KEY (region, id))"
    )
    conn.execute(
        """INSERT INTO "Orders" SELECT r, i, (i % 50)::text FROM unnest(ARRAY['eu', 'us']) r,"""
        " generate_series(1, 500) i"
    )
    conn.execute(
        """UPDATE "Orders" SET "qtyText" = 'five' WHERE (region, id) IN (('eu', 3), ('us', 250))"""
    )
    plan = write_plan(tmp_path / "qty.yaml", QTY_PLAN)

    scanned = zdm("validate", plan, "--dsn", dsn, "--scan")
    assert scanned.returncode == 1
    assert "2 of 1000 rows cannot be converted: (region=eu, id=3), (region=us, id=250)" in (
        scanned.stdout
    )

    failed = zdm("run", plan, "--dsn", dsn)
    assert failed.returncode == 1, failed.stderr
    assert '2 row(s) of public."Orders" cannot be mapped' in failed.stderr
    assert "(region=eu, id=3), (region=us, id=250)" in failed.stderr
    assert 'invalid input syntax for type integer: "five"' in failed.stderr
    assert scalar(conn, 'SELECT count(*) FROM "Orders" WHERE "Qty" IS NULL') == 2
    recorded = conn.execute("SELECT table_name, sqlstate FROM zdm.mapping_errors").fetchall()
    assert recorded == [('public."Orders"', "22P02")] * 2

    with psycopg.connect(dsn, autocommit=True) as fixer:
        fixer.execute("SET session_replication_role = replica")
        fixer.execute("""UPDATE "Orders" SET "qtyText" = '5' WHERE "qtyText" = 'five'""")
    done = zdm("run", plan, "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    assert not scalar(
        conn, 'SELECT count(*) FROM "Orders" WHERE "Qty" IS DISTINCT FROM "qtyText"::int'
    )
