"""Rollback details: `sql` steps undone by their `down_file`, a half-finished `set_not_null`
undone with its helper constraint, the run left `rolled_back`, and `zdm status` saying so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from zdm import api
from zdm.cli import app
from zdm.logs import configure

PLAN = """\
version: 1
name: half_done
phases:
  additive:
    - sql: {up_file: sql/up.sql, down_file: sql/down.sql}
  cleanup:
    - set_not_null: {table: t, column: v}
"""
# Written for psql: its own transaction, which zdm's step transaction replaces.
UP = "-- new table\nBEGIN;\nCREATE TABLE extra (id int PRIMARY KEY);\nCOMMIT;\n"
DOWN = "DROP TABLE extra;\n"


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> None:
    """Another test's CliRunner may have left structlog writing to a closed stderr."""
    configure()


def _value(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _helpers(conn: psycopg.Connection[Any]) -> list[tuple[str, bool]]:
    """Constraints on t.v other than the primary key (the set_not_null helper), and validity."""
    return conn.execute(
        "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 't'::regclass"
        " AND conname LIKE 't\\_v\\_%' ORDER BY conname"
    ).fetchall()


def test_half_finished_set_not_null_and_sql_down_file(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, server_version: int
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, NULL)")
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "up.sql").write_text(UP)
    (tmp_path / "sql" / "down.sql").write_text(DOWN)
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)

    outcome = api.run_plan(plan, dsn)
    assert outcome.status == "failed" and outcome.exit_code == 1
    assert "violated by some row" in outcome.message or "contains null values" in outcome.message
    # The step stopped half-way: its NOT VALID helper is there, the column still nullable.
    helper = "t_v_not_null" if server_version >= 180000 else "t_v_zdm_not_null"
    assert _helpers(conn) == [(helper, False)]
    assert _value(conn, "SELECT to_regclass('extra') IS NOT NULL") is True

    result = CliRunner().invoke(app, ["rollback", str(plan), "--dsn", dsn])
    configure()
    assert result.exit_code == 0, result.stderr
    assert "rolled_back" in result.stderr and "2 steps undone" in result.stderr
    assert _helpers(conn) == []
    assert (
        _value(
            conn,
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'v'",
        )
        is False
    )
    assert _value(conn, "SELECT to_regclass('extra') IS NULL") is True  # down_file ran
    (run,) = api.status(dsn, "half_done")
    assert run.status == "rolled_back"
    assert {s.status for s in run.steps} == {"rolled_back"}
    result = CliRunner().invoke(app, ["status", "half_done", "--dsn", dsn])
    configure()
    assert "half_done  run 1  rolled_back" in result.stdout

    # With the data fixed, the plan runs again from the start and completes.
    conn.execute("UPDATE t SET v = 0")
    outcome = api.run_plan(plan, dsn)
    assert outcome.status == "completed", outcome.message
    assert (
        _value(
            conn,
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'v'",
        )
        is True
    )
