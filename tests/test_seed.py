"""The example users table: its messy phones all normalise into what add_phone's CHECK accepts."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg
import pytest
from psycopg import sql

from zdm.demo.seed import PHONE_CHECK, create_schema, main, phone_expression, seed_users


def _normalised_phones_violating_check(conn: psycopg.Connection[Any], table: sql.Composable) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {t} WHERE {expr} IS NULL OR NOT ({expr} ~ {check})").format(
            t=table, expr=sql.SQL(phone_expression()), check=sql.Literal(PHONE_CHECK)
        )
    ).fetchone()
    assert row is not None
    count: int = row[0]
    return count


def test_seeded_users_satisfy_every_constraint(conn: psycopg.Connection[Any]) -> None:
    create_schema(conn)
    seed_users(conn, 1000, batch=300)

    total, emails, ids = conn.execute(
        "SELECT count(*), count(DISTINCT email), count(DISTINCT id) FROM users"
    ).fetchone() or (0, 0, 0)
    assert (total, emails, ids) == (1000, 1000, 1000)
    assert _normalised_phones_violating_check(conn, sql.Identifier("users")) == 0

    formats = conn.execute(
        "SELECT count(DISTINCT regexp_replace(contact->>'phone', '[0-9]', '#', 'g')) FROM users"
    ).fetchone()
    assert formats is not None and formats[0] >= 8, "phones come in several messy formats"
    messy = conn.execute(
        "SELECT count(*) FROM users WHERE contact->>'phone' ~ '[ .()-]'"
    ).fetchone()
    assert messy is not None and messy[0] > 0

    constraints = conn.execute(
        "SELECT conname, convalidated FROM pg_constraint"
        " WHERE conrelid = 'users'::regclass AND contype <> 'n'"  # PG 18 lists NOT NULLs
        " ORDER BY conname"
    ).fetchall()
    assert constraints == [
        ("users_email_format", True),
        ("users_name_length", True),
        ("users_pkey", True),
    ]
    index = conn.execute(
        "SELECT indisunique, indisvalid, pg_get_expr(indpred, indrelid) FROM pg_index"
        " WHERE indexrelid = 'idx_users_email_unique'::regclass"
    ).fetchone()
    assert index == (True, True, "(deleted_at IS NULL)")
    # INSERT leaves reltuples at -1 ("never analyzed"); ANALYZE counts the small table exactly.
    analyzed = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'users'::regclass")
    assert analyzed.fetchone() == (1000,)


def test_add_phone_end_state_validates(conn: psycopg.Connection[Any]) -> None:
    """What plans/add_phone.yaml ends with: a varchar(20) phone, CHECKed and NOT NULL."""
    create_schema(conn)
    seed_users(conn, 1000)
    conn.execute("ALTER TABLE users ADD COLUMN phone varchar(20)")
    conn.execute(sql.SQL("UPDATE users SET phone = {}").format(sql.SQL(phone_expression())))
    conn.execute(
        sql.SQL("ALTER TABLE users ADD CONSTRAINT check_phone_format CHECK (phone ~ {})").format(
            sql.Literal(PHONE_CHECK)
        )
    )
    conn.execute("ALTER TABLE users ALTER COLUMN phone SET NOT NULL")
    assert conn.execute("SELECT count(*) FROM users WHERE phone IS NULL").fetchone() == (0,)


def test_the_schema_rejects_what_the_seed_document_rejects(conn: psycopg.Connection[Any]) -> None:
    create_schema(conn)
    insert = "INSERT INTO users (email, name, password_hash) VALUES (%s, %s, 'h')"
    conn.execute(insert, ["a@example.com", "Al"])
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(insert, ["a@example.com", "Another"])
    conn.execute("UPDATE users SET deleted_at = now()")
    conn.execute(insert, ["a@example.com", "Al again"])  # deleted users free their email
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(insert, ["not-an-email", "Bob"])
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(insert, ["b@example.a|c", "Bob"])
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(insert, ["b@example.com", "B"])


@pytest.mark.parametrize("start", [1, 7_999_999_990, 9_223_372_036_854_775_000])
def test_phones_are_valid_for_any_id(conn: psycopg.Connection[Any], start: int) -> None:
    create_schema(conn)
    conn.execute(
        sql.SQL("ALTER TABLE users ALTER COLUMN id RESTART WITH {}").format(sql.Literal(start))
    )
    seed_users(conn, 16)
    assert _normalised_phones_violating_check(conn, sql.Identifier("users")) == 0


def test_seed_is_deterministic_and_appends(conn: psycopg.Connection[Any]) -> None:
    digest = sql.SQL("SELECT md5(string_agg(t::text, ',' ORDER BY id)), count(*) FROM {} AS t")
    create_schema(conn, "a", "people")
    seed_users(conn, 100, schema="a", table="people")
    create_schema(conn, "b", "people")
    seed_users(conn, 60, schema="b", table="people")
    seed_users(conn, 40, schema="b", table="people", batch=7)
    first = conn.execute(digest.format(sql.Identifier("a", "people"))).fetchone()
    second = conn.execute(digest.format(sql.Identifier("b", "people"))).fetchone()
    assert first is not None and first == second and first[1] == 100


def test_names_are_quoted(conn: psycopg.Connection[Any]) -> None:
    create_schema(conn, 'My "Schema"', "User Table")
    seed_users(conn, 10, schema='My "Schema"', table="User Table")
    table = sql.Identifier('My "Schema"', "User Table")
    assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone() == (10,)
    assert _normalised_phones_violating_check(conn, table) == 0


def test_invalid_arguments_are_refused(conn: psycopg.Connection[Any]) -> None:
    create_schema(conn)
    with pytest.raises(ValueError):
        seed_users(conn, 10, batch=0)
    with pytest.raises(ValueError):
        seed_users(conn, -1)


def test_main_creates_and_fills(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dsn", dsn, "--rows", "25", "--schema", "demo"]) == 0
    assert main(["--dsn", dsn, "--rows", "5", "--schema", "demo", "--replace"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "seeded 5 rows into demo.users" in err
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM demo.users").fetchone() == (5,)
    assert main(["--dsn", dsn, "--rows", "5", "--schema", "demo"]) == 1  # table exists
    assert "already exists" in capsys.readouterr().err


def test_module_runs_as_a_script(dsn: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zdm.demo.seed", "--dsn", dsn, "--rows", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM public.users").fetchone() == (3,)
