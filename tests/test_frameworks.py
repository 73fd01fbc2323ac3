"""Alembic and Django: the example projects run against a real server, their SQL pipes into
`zdm lint -` and `zdm convert -`, and zdm.frameworks says when a plan did not complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from zdm.frameworks import PlanNotCompleted, ZdmRunFailed, require_completed, run_plan

pytest.importorskip("alembic")
pytest.importorskip("django")

EXAMPLES = Path(__file__).parent.parent / "examples"
ZDM = [sys.executable, "-m", "zdm"]


def run(
    argv: list[str], cwd: Path, dsn: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZDM_DSN": dsn}
    return subprocess.run(
        argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=300
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def seed(conn: psycopg.Connection[Any], table: str, rows: int) -> None:
    conn.execute(
        f"INSERT INTO {table} (email, contact) SELECT 'c' || g || '@x', "
        "jsonb_build_object('phone', '+1 (555) ' || g) FROM generate_series(1, %s) g",
        [rows],
    )


def test_alembic_example_runs_a_zdm_plan_and_its_sql_pipes_into_lint(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    project = EXAMPLES / "alembic"
    alembic = [sys.executable, "-m", "alembic", "-c", "alembic.ini"]
    ok(run([*alembic, "upgrade", "0001"], project, dsn))
    seed(conn, "customers", 1200)
    ok(run([*alembic, "upgrade", "head"], project, dsn))
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0003",)
    assert conn.execute(
        "SELECT count(*) FROM customers WHERE phone IS DISTINCT FROM"
        " regexp_replace(contact->>'phone', '[^0-9+]', '', 'g')"
    ).fetchone() == (0,)
    assert conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'customers'::regclass AND attname = 'email'"
    ).fetchone() == ("character varying(320)",)
    assert conn.execute("SELECT to_regclass('customers_phone_idx') IS NOT NULL").fetchone() == (
        True,
    )
    require_completed(project / "plans" / "add_phone.yaml", dsn)

    # alembic upgrade … --sql | zdm lint -
    whole = ok(run([*alembic, "upgrade", "head", "--sql"], project, dsn))
    assert "ALTER TABLE customers ALTER COLUMN email TYPE VARCHAR(320)" in whole
    lint = run([*ZDM, "lint", "-"], project, dsn, stdin=whole)
    assert (lint.returncode, lint.stdout) == (0, ""), lint.stderr  # 0001 tells 0003 the type
    last = ok(run([*alembic, "upgrade", "0002:0003", "--sql"], project, dsn))
    lint = run([*ZDM, "lint", "-"], project, dsn, stdin=last)
    assert lint.returncode == 1 and "warning [column-type-rewrite]" in lint.stdout
    lint = run([*ZDM, "lint", "--dsn", dsn, "-"], project, dsn, stdin=last)
    assert (lint.returncode, lint.stdout) == (0, ""), lint.stderr  # varchar(255) -> (320)
    plan = ok(run([*ZDM, "convert", "-"], project, dsn, stdin=last))
    assert "- alter_column: {table: customers, column: email, type: varchar(320)" in plan

    # downgrade rolls the plan back through zdm
    ok(run([*alembic, "downgrade", "0001"], project, dsn))
    assert conn.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'customers'::regclass"
        " AND attname = 'phone' AND NOT attisdropped"
    ).fetchone() == (0,)


def test_django_example_runs_a_zdm_plan_and_sqlmigrate_pipes_into_lint(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    project = EXAMPLES / "django"
    manage = [sys.executable, "manage.py"]
    ok(run([*manage, "migrate", "accounts", "0001"], project, dsn))
    seed(conn, "accounts_customer", 1500)
    ok(run([*manage, "migrate"], project, dsn))
    assert conn.execute(
        "SELECT name FROM django_migrations WHERE app = 'accounts' ORDER BY id"
    ).fetchall() == [("0001_initial",), ("0002_phone",)]
    assert conn.execute(
        "SELECT count(*) FROM accounts_customer WHERE phone IS NULL"
    ).fetchone() == (0,)
    require_completed("add_phone", dsn)

    # python manage.py sqlmigrate accounts 0001 | zdm lint - ; | zdm convert -
    sql = ok(run([*manage, "sqlmigrate", "accounts", "0001"], project, dsn))
    assert 'CREATE TABLE "accounts_customer"' in sql
    lint = run([*ZDM, "lint", "-"], project, dsn, stdin=sql)
    assert (lint.returncode, lint.stdout) == (0, "") and "no problems in 1 file" in lint.stderr
    plan = ok(run([*ZDM, "convert", "-"], project, dsn, stdin=sql))
    assert "accounts_customer" in plan and plan.startswith("# Written by `zdm convert stdin`")


PLAN = """\
version: 1
name: checked
phases:
  additive:
    - add_column: {table: t, column: {name: b, type: int}}
  dual_read:
    - verify: {sql: "SELECT count(*) FROM t", expect: 5}
"""


def test_run_plan_raises_unless_completed_and_require_completed_says_why(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    plan = tmp_path / "checked.yaml"
    plan.write_text(PLAN)
    with pytest.raises(PlanNotCompleted, match="zdm plan checked has never run here"):
        require_completed(plan, dsn)
    with pytest.raises(ZdmRunFailed, match=r"zdm plan .*checked\.yaml: failed") as failed:
        run_plan(plan, dsn)
    assert failed.value.exit_code == 1
    with pytest.raises(PlanNotCompleted, match=r"zdm plan checked is failed \(run 1\)"):
        require_completed("checked", dsn)
    conn.execute("INSERT INTO t SELECT generate_series(1, 5)")
    run_plan(plan, dsn)  # resumes and completes
    require_completed(plan, dsn)
