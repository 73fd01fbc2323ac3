"""What backfill, verify and sql plan, and their inverses (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ops_support import U, ctx, plan_of, shape

from zdm.ddl import BackfillJob, Check, LockMode, Table, Txn
from zdm.engine.executor import render
from zdm.operations import Context, Irreversible, plan_inverse, plan_step
from zdm.operations.dual_write import mapping_token, redundant_for
from zdm.plan import DualWrite, Settings, Sql, Verify

PLAN = """
dual_write:
  - dual_write: {table: users, set: {phone: "contact->>'phone'"}}
  - dual_write: {table: users, name: second, set: {email_lower: lower(email)}}
  - dual_write: {table: orders, set: {total: "qty * price"}}
backfill:
  - backfill: {table: users, batch_size: 500}
  - backfill: {table: users, set: {phone: "'0'"}, where: phone IS NULL, batch_size: auto}
"""


def test_backfill_takes_the_tables_dual_write_mappings() -> None:
    plan = plan_of(PLAN)
    (job,) = plan_step(plan.phases.backfill[0], ctx(plan=plan))
    assert isinstance(job, BackfillJob)
    assert job.table == Table("public", "users")
    assert job.set == {"phone": "contact->>'phone'", "email_lower": "lower(email)"}
    assert job.where is None
    assert job.options.batch_size == 500
    assert job.label == "backfill public.users"


def test_backfill_with_its_own_set_and_where() -> None:
    plan = plan_of(PLAN)
    (job,) = plan_step(plan.phases.backfill[1], ctx(plan=plan))
    assert isinstance(job, BackfillJob)
    assert job.set == {"phone": "'0'"}
    assert job.where == "phone IS NULL"


def test_backfill_passes_over_the_triggers_it_makes_redundant() -> None:
    plan = plan_of(PLAN)
    dw = plan.phases.dual_write
    (job,) = plan_step(plan.phases.backfill[0], ctx(plan=plan))
    assert isinstance(job, BackfillJob)
    # It writes both users mappings as the triggers would, from columns it does not write.
    assert job.skip_triggers == tuple(mapping_token(d.set, d.reverse) for d in dw[:2])
    # Its own `where` and `set`: the triggers may still have work to do on its rows.
    (own,) = plan_step(plan.phases.backfill[1], ctx(plan=plan))
    assert isinstance(own, BackfillJob) and own.skip_triggers == ()


@pytest.mark.parametrize(
    ("mapping", "written", "redundant"),
    [
        ({"phone": "regexp_replace(contact->>'phone', '[^0-9+]', '', 'g')"}, None, True),
        # An expression that reads a column the batch writes sees another value in the trigger.
        ({"a": "x + 1", "b": "a * 2"}, None, False),
        ({"b": '"A" * 2'}, {"a": "x", "b": '"A" * 2'}, False),
        ({"h": "md5(users::text)"}, None, False),
        ({"h": "md5(zdm_row::text)"}, None, False),
        # Names in strings and comments are not reads.
        ({"a": "'b' || x -- b\n"}, {"a": "'b' || x -- b\n", "b": "y"}, True),
        # The batch must write every mapped column, with the same expression.
        ({"a": "x", "b": "y"}, {"a": "x"}, False),
        ({"a": "x"}, {"a": "x + 0"}, False),
    ],
)
def test_redundant_for(
    mapping: dict[str, str], written: dict[str, str] | None, redundant: bool
) -> None:
    dw = DualWrite(table="users", set=mapping)
    assert redundant_for(dw, written or mapping, Table("public", "users")) is redundant


def test_backfill_and_verify_have_nothing_to_undo() -> None:
    plan = plan_of(PLAN)
    assert plan_inverse(plan.phases.backfill[0], ctx(plan=plan)) == []
    assert plan_inverse(Verify(sql="SELECT 1", expect=1), ctx()) == []


def test_verify() -> None:
    (check,) = plan_step(
        Verify(sql="SELECT count(*) FROM users WHERE phone IS NULL", expect=0, name="all phones"),
        ctx(),
    )
    assert isinstance(check, Check)
    assert check.query.as_string(None) == "SELECT count(*) FROM users WHERE phone IS NULL"
    assert check.expect == 0
    assert check.label == "all phones"
    (unnamed,) = plan_step(Verify(sql="SELECT true", expect=True), ctx())
    assert isinstance(unnamed, Check)
    assert unnamed.label == "verify"


def test_sql_with_declared_lock_and_down() -> None:
    step = Sql(
        up="ALTER TABLE t ADD COLUMN c int",
        down="ALTER TABLE t DROP COLUMN c",
        lock="ACCESS EXCLUSIVE",
    )
    up = plan_step(step, ctx())
    assert shape(up) == [
        U(("ALTER TABLE t ADD COLUMN c int",), LockMode.ACCESS_EXCLUSIVE, probe=False)
    ]
    down = plan_inverse(step, ctx())
    assert shape(down) == [
        U(("ALTER TABLE t DROP COLUMN c",), LockMode.ACCESS_EXCLUSIVE, probe=False)
    ]
    (txn,) = up
    assert isinstance(txn, Txn)
    # The author's SQL runs under the same short lock_timeout as zdm's own statements.
    assert [q.as_string(None) for q in render(txn, Settings())] == [
        "BEGIN",
        "SET LOCAL lock_timeout = '50ms'",
        "SET LOCAL statement_timeout = '0ms'",
        "ALTER TABLE t ADD COLUMN c int",
        "COMMIT",
    ]


def test_sql_without_a_declared_lock_is_treated_as_access_exclusive() -> None:
    (txn,) = plan_step(Sql(up="UPDATE t SET a = 1"), ctx())
    assert isinstance(txn, Txn)
    assert txn.lock is LockMode.ACCESS_EXCLUSIVE
    assert txn.statements[0].note == "raw SQL; lock not declared, treated as ACCESS EXCLUSIVE"


def test_sql_outside_a_transaction() -> None:
    step = Sql(
        up="CREATE INDEX CONCURRENTLY i ON t (a)",
        down="DROP INDEX CONCURRENTLY i",
        transactional=False,
        lock="SHARE UPDATE EXCLUSIVE",
    )
    sue = LockMode.SHARE_UPDATE_EXCLUSIVE
    assert shape(plan_step(step, ctx())) == [
        U(("CREATE INDEX CONCURRENTLY i ON t (a)",), sue, False, False)
    ]
    assert shape(plan_inverse(step, ctx())) == [
        U(("DROP INDEX CONCURRENTLY i",), sue, False, False)
    ]


def test_sql_without_down_is_irreversible() -> None:
    with pytest.raises(Irreversible, match="no down"):
        plan_inverse(Sql(up="SELECT 1"), ctx())


def test_sql_files_are_read_from_the_plans_directory(tmp_path: Path) -> None:
    (tmp_path / "up.sql").write_text("CREATE TABLE a (id int)")
    (tmp_path / "down.sql").write_text("DROP TABLE a")
    step = Sql(up_file="up.sql", down_file="down.sql", lock="SHARE")
    context = Context(base_dir=tmp_path)
    assert shape(plan_step(step, context))[0].sql == ("CREATE TABLE a (id int)",)
    assert shape(plan_inverse(step, context))[0].sql == ("DROP TABLE a",)


def test_sql_outside_a_transaction_runs_each_statement_as_a_unit_of_its_own() -> None:
    step = Sql(
        up="CREATE INDEX CONCURRENTLY i ON t (a);\n-- the second\nCREATE INDEX CONCURRENTLY j ON t (b);\n",
        down="DROP INDEX CONCURRENTLY j; DROP INDEX CONCURRENTLY i;",
        transactional=False,
        lock="SHARE UPDATE EXCLUSIVE",
    )
    sue = LockMode.SHARE_UPDATE_EXCLUSIVE
    assert shape(plan_step(step, ctx())) == [
        U(("CREATE INDEX CONCURRENTLY i ON t (a)",), sue, False, False),
        U(("-- the second\nCREATE INDEX CONCURRENTLY j ON t (b)",), sue, False, False),
    ]
    assert [a.label for a in plan_inverse(step, ctx()) if isinstance(a, Txn)] == [
        "sql down (1/2)",
        "sql down (2/2)",
    ]


def test_sql_names_the_tables_it_locks() -> None:
    step = Sql(up="ALTER TABLE a ADD x int; ALTER TABLE s.b ADD y int", tables=["a", "s.b"])
    (txn,) = plan_step(step, ctx())
    assert isinstance(txn, Txn)
    assert [str(t) for t in txn.tables] == ["public.a", "s.b"]
    weak = Sql(up="ANALYZE a", lock="SHARE UPDATE EXCLUSIVE", tables=["a"])
    (txn,) = plan_step(weak, ctx())
    assert isinstance(txn, Txn) and txn.tables == ()  # a lock the application does not wait on
