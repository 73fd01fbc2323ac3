"""Every expression of a plan is compiled against the live schema before anything is created."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from zdm_helpers import add_phone, scalar, seed, write_plan, zdm

from zdm import api
from zdm.plan import PlanError

Edit = Callable[[dict[str, Any]], None]


def _phases(plan: dict[str, Any]) -> dict[str, Any]:
    return plan["phases"]  # type: ignore[no-any-return]


def _typo_set(plan: dict[str, Any]) -> None:
    _phases(plan)["dual_write"][0]["dual_write"]["set"]["phone"] = (
        "regexp_replace(contakt->>'phone', '[^0-9+]', '', 'g')"
    )


def _typo_reverse(plan: dict[str, Any]) -> None:
    _phases(plan)["dual_write"][0]["dual_write"]["reverse"] = {
        "contact": "jsonb_build_object('phone', phonne)"
    }


def _typo_backfill_set(plan: dict[str, Any]) -> None:
    _phases(plan)["backfill"][0]["backfill"]["set"] = {"phone": "contakt->>'phone'"}


def _typo_where(plan: dict[str, Any]) -> None:
    _phases(plan)["backfill"][0]["backfill"]["where"] = "phone IS NULL AND contakt IS NOT NULL"


def _typo_from(plan: dict[str, Any]) -> None:
    _phases(plan)["backfill"][0]["backfill"]["from"] = {
        "table": "accounts",
        "on": "accounts.user_id = userz.id",
    }


def _typo_verify(plan: dict[str, Any]) -> None:
    _phases(plan)["dual_read"][0]["verify"]["sql"] = (
        "SELECT count(*) FROM users WHERE phonne IS NULL"
    )


def _typo_check(plan: dict[str, Any]) -> None:
    _phases(plan)["cleanup"][1]["add_check"]["check"] = "phonne ~ '^[0-9]+$'"


def _typo_default(plan: dict[str, Any]) -> None:
    _phases(plan)["additive"][0]["add_column"]["column"]["default"] = "nextval('no_such_seq')"


def _typo_index_expression(plan: dict[str, Any]) -> None:
    _phases(plan)["cleanup"][0]["create_index"] = {
        "table": "users",
        "name": "idx_users_phone",
        "expression": "lower(phonne)",
    }


def _typo_index_where(plan: dict[str, Any]) -> None:
    _phases(plan)["cleanup"][0]["create_index"]["where"] = "phonne IS NOT NULL"


def _wrong_type(plan: dict[str, Any]) -> None:
    # A type error, not a name error: PostgreSQL's hint is passed on.
    _phases(plan)["dual_write"][0]["dual_write"]["set"]["phone"] = "(contact->>'phone') * 2"


TYPOS: dict[str, tuple[Edit, str, str]] = {
    "set": (_typo_set, "phases.dual_write[0].dual_write.set.phone", "contakt"),
    "reverse": (_typo_reverse, "phases.dual_write[0].dual_write.reverse.contact", "phonne"),
    "backfill set": (_typo_backfill_set, "phases.backfill[0].backfill.set.phone", "contakt"),
    "where": (_typo_where, "phases.backfill[0].backfill.where", "contakt"),
    "from": (_typo_from, "phases.backfill[0].backfill.from.on", "userz"),
    "verify": (_typo_verify, "phases.dual_read[0].verify.sql", "phonne"),
    "check": (_typo_check, "phases.cleanup[1].add_check.check", "phonne"),
    "default": (_typo_default, "phases.additive[0].add_column.column", "no_such_seq"),
    "index expression": (
        _typo_index_expression,
        "phases.cleanup[0].create_index.expression",
        "phonne",
    ),
    "index where": (_typo_index_where, "phases.cleanup[0].create_index.where", "phonne"),
    "type": (_wrong_type, "phases.dual_write[0].dual_write.set.phone", "text * integer"),
}


def _plan(tmp_path: Path, edit: Edit | None = None) -> Path:
    plan = copy.deepcopy(add_phone())
    if edit is not None:
        edit(plan)
    return write_plan(tmp_path / "add_phone.yaml", plan)


def _objects(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """What a run could have created on users: column, triggers, functions, indexes, constraints."""
    return {
        "phone column": scalar(
            conn,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'users'::regclass"
            " AND attname = 'phone' AND NOT attisdropped",
        ),
        "triggers": scalar(
            conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'users'::regclass"
        ),
        "functions": scalar(conn, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'zdm%'"),
        "indexes": scalar(conn, "SELECT count(*) FROM pg_index WHERE indrelid = 'users'::regclass"),
        "constraints": scalar(
            conn, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'users'::regclass"
        ),
    }


@pytest.mark.parametrize("field", list(TYPOS))
def test_a_typo_in_each_field_is_refused_before_anything_is_created(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, field: str
) -> None:
    seed(dsn, 50)
    conn.execute("CREATE TABLE accounts (user_id bigint)")
    edit, path, name = TYPOS[field]
    plan = _plan(tmp_path, edit)
    before = _objects(conn)

    _, problems = api.validate(plan, dsn)
    assert len(problems) == 1, problems
    assert path in problems[0] and name in problems[0]
    assert problems[0].startswith(f"{plan}:")
    line = int(problems[0].split(":")[1])
    assert line > 0
    if field == "type":
        assert "hint: No operator matches" in problems[0]

    with pytest.raises(PlanError) as refused:
        api.run_plan(plan, dsn)
    assert path in str(refused.value) and name in str(refused.value)
    assert _objects(conn) == before
    assert not scalar(conn, "SELECT count(*) FROM pg_class WHERE relpersistence = 't'")


def test_the_seed_plan_passes(dsn: str, tmp_path: Path) -> None:
    seed(dsn, 50)
    _, problems = api.validate(_plan(tmp_path), dsn)
    assert problems == []


def test_the_acceptance_typo_through_the_cli(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    seed(dsn, 50)
    plan = _plan(tmp_path, _typo_set)
    before = _objects(conn)

    checked = zdm("validate", plan, "--dsn", dsn)
    assert checked.returncode == 2, checked.stderr
    assert 'column "contakt" does not exist' in checked.stderr
    assert f"{plan}:" in checked.stderr and "dual_write[0].dual_write.set.phone" in checked.stderr

    dry = zdm("run", plan, "--dry-run", "--dsn", dsn)
    assert dry.returncode == 2 and "contakt" in dry.stderr

    ran = zdm("run", plan, "--dsn", dsn)
    assert ran.returncode == 2, ran.stderr
    assert "contakt" in ran.stderr and "Traceback" not in ran.stderr
    assert _objects(conn) == before
    # The application's writes work as before.
    conn.execute("UPDATE users SET contact = contact WHERE id = 1")
    conn.execute(
        "INSERT INTO users (email, name, password_hash, contact)"
        " VALUES ('new@example.com', 'New', 'x', '{\"phone\": \"+1 555 0100\"}')"
    )


def test_a_resumed_run_checks_only_what_is_left(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """After the plan's own steps changed the schema (phone added), the checks still pass."""
    seed(dsn, 50)
    plan = _plan(tmp_path)
    done = zdm("run", plan, "--until", "dual_write", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    _, problems = api.validate(plan, dsn)
    assert problems == []
    assert zdm("run", plan, "--dsn", dsn).returncode == 0


def test_expressions_may_name_what_the_plan_adds(dsn: str, tmp_path: Path) -> None:
    seed(dsn, 20)
    plan = add_phone()
    _phases(plan)["cleanup"] += [
        {"rename_column": {"table": "users", "column": "email", "to": "mail"}},
        {"verify": {"sql": "SELECT count(*) FROM users WHERE mail IS NULL", "expect": 0}},
    ]
    path = write_plan(tmp_path / "add_phone.yaml", plan)
    _, problems = api.validate(path, dsn)
    assert problems == []


def test_a_table_locked_for_long_stops_the_check_with_a_message_not_a_traceback(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    seed(dsn, 10)
    plan = _plan(tmp_path)
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        blocked = zdm("validate", plan, "--dsn", dsn)
        locker.rollback()
    assert blocked.returncode == 1, blocked.stderr
    assert "could not check the expressions of step additive[0]" in blocked.stderr
    assert "Traceback" not in blocked.stderr
    assert _objects(conn)["phone column"] == 0


def test_names_a_raw_sql_step_may_create_are_not_refused(dsn: str, tmp_path: Path) -> None:
    """The check does not run `sql` steps: after one, an unknown name may be what it creates."""
    seed(dsn, 10)
    plan = add_phone()
    _phases(plan)["additive"] = [
        {"sql": {"up": "CREATE SEQUENCE phone_seq", "down": "DROP SEQUENCE phone_seq"}},
        {
            "add_column": {
                "table": "users",
                "column": {"name": "phone", "type": "varchar(20)"},
            }
        },
        {"set_default": {"table": "users", "column": "phone", "default": "nextval('phone_seq')"}},
    ]
    path = write_plan(tmp_path / "add_phone.yaml", plan)
    assert api.validate(path, dsn)[1] == []
    # A type error is still one.
    _phases(plan)["cleanup"][1]["add_check"]["check"] = "length(phone)"
    path = write_plan(tmp_path / "add_phone.yaml", plan)
    (problem,) = api.validate(path, dsn)[1]
    assert "cleanup[1].add_check.check" in problem and "must be type boolean" in problem


def test_a_missing_table_is_named_once_and_a_quoted_name_is_explained(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    conn.execute('CREATE TABLE "Mixed Case" (id int PRIMARY KEY)')
    step = {"add_column": {"table": "Mixed Casex", "column": {"name": "b", "type": "text"}}}
    plan = {"version": 1, "name": "q", "phases": {"additive": [step]}}
    missing = zdm("validate", write_plan(tmp_path / "missing.yaml", plan), "--dsn", dsn)
    assert missing.returncode == 2
    assert "table public.Mixed Casex does not exist" in missing.stderr
    assert "pg_temp" not in missing.stderr

    step["add_column"]["table"] = '"Mixed Case"'
    quoted = zdm("validate", write_plan(tmp_path / "quoted.yaml", plan), "--dsn", dsn)
    assert quoted.returncode == 2
    assert 'add_column.table: write names without SQL quotes: "Mixed Case" is the name' in (
        quoted.stderr
    )
    step["add_column"]["table"] = "Mixed Case"
    good = zdm("validate", write_plan(tmp_path / "good.yaml", plan), "--dsn", dsn)
    assert good.returncode == 0, good.stderr


@pytest.mark.parametrize(
    ("field", "text", "name"),
    [
        ("up", "upper(nmae)", "nmae"),
        ("down", "lower(nmae)", "nmae"),
        ("check", "length(nmae) > 1", "nmae"),
    ],
)
def test_a_typo_in_a_change_is_reported_at_its_field(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, field: str, text: str, name: str
) -> None:
    """The expanded steps' expressions are checked like any, and a typo is reported at the line
    of the change's own field (`down` for its dual-write's reverse mapping), not the file's."""
    seed(dsn, 50)
    change = {
        "table": "users",
        "column": "name",
        "type": "varchar(50)",
        "up": "CAST(name AS varchar(50))",
        "down": "name",
        "check": {"name": "users_name_length", "constraint": "length(name) > 1"},
    }
    change[field] = text if field != "check" else {"name": "users_name_length", "constraint": text}
    plan = write_plan(
        tmp_path / "p.yaml", {"version": 1, "name": "p", "changes": [{"alter_column": change}]}
    )
    before = _objects(conn)
    _, problems = api.validate(plan, dsn)
    assert len(problems) == 1, problems
    where = "check.constraint" if field == "check" else field
    assert f"changes[0].alter_column.{where}:" in problems[0], problems
    assert f'column "{name}" does not exist' in problems[0]
    line = int(problems[0].split(":")[1])
    lines = plan.read_text().splitlines()
    assert name in lines[line - 1], (line, lines)
    assert _objects(conn) == before


def test_a_change_checked_as_its_swap_leaves_the_table(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Steps after an alter_column's swap see the column under its new name: a check naming it
    so passes, one naming the dropped name is a typo."""
    conn.execute("CREATE TABLE people (id bigint PRIMARY KEY, name varchar(100))")

    def problems(check: str) -> list[str]:
        change = {
            "table": "people",
            "column": "name",
            "name": "full_name",
            "type": "varchar(50)",
            "down": "name",
            "check": {"name": "people_full_name_length", "constraint": check},
        }
        plan = write_plan(
            tmp_path / "p.yaml", {"version": 1, "name": "p", "changes": [{"alter_column": change}]}
        )
        return api.validate(plan, dsn)[1]

    assert problems("length(full_name) > 1") == []
    (found,) = problems("length(name) > 1")
    assert 'column "name" does not exist' in found and "check.constraint" in found
