"""Exact SQL of the column steps and their inverses (no database).

set_not_null has two shapes: PostgreSQL <= 17 proves NOT NULL with a validated CHECK, then sets
it without a scan; 18 adds the not-null constraint NOT VALID and validates it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from ops_support import PG17, PG18, U, all_sql, ctx, plan_of, probes, shape, statement_locks

from zdm.ddl import LockMode
from zdm.ddl.sqltext import names_column
from zdm.operations import Irreversible, plan_inverse, plan_memo, plan_step
from zdm.plan import (
    AddColumn,
    DropColumn,
    DropDefault,
    DropNotNull,
    NewColumn,
    RenameColumn,
    SetDefault,
    SetNotNull,
    StepSpec,
)

AE = LockMode.ACCESS_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE
NONE = LockMode.NONE

T = '"public"."users"'


def col_exists(column: str, table: str = T) -> str:
    return (
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
        f"to_regclass('{table}') AND attname = '{column}' AND NOT attisdropped)"
    )


def test_add_column_nullable() -> None:
    actions = plan_step(
        AddColumn(table="users", column=NewColumn(name="phone", type="varchar(20)")), ctx()
    )
    assert shape(actions) == [U((f'ALTER TABLE {T} ADD COLUMN "phone" varchar(20)',), AE)]
    assert probes(actions) == [col_exists("phone")]


def test_add_column_not_null_with_constant_default() -> None:
    step = AddColumn(
        table="users",
        column=NewColumn(name="active", type="boolean", nullable=False, default="true"),
    )
    check, add = shape(plan_step(step, ctx()))
    assert add == U((f'ALTER TABLE {T} ADD COLUMN "active" boolean DEFAULT true NOT NULL',), AE)
    # First, the same ADD COLUMN on a one-row temporary table proves the default is not volatile.
    assert check.lock == LockMode.NONE
    assert check.sql[:3] == (
        'CREATE TEMPORARY TABLE "pg_temp"."zdm_default_probe" (zdm_row int) ON COMMIT DROP',
        'INSERT INTO "pg_temp"."zdm_default_probe" VALUES (1)',
        'ALTER TABLE "pg_temp"."zdm_default_probe" ADD COLUMN probe boolean DEFAULT true',
    )
    assert "atthasmissing" in check.sql[3]


def test_undo_add_column_drops_it() -> None:
    step = AddColumn(table="users", column=NewColumn(name="phone", type="text"))
    actions = plan_inverse(step, ctx())
    assert shape(actions) == [U((f'ALTER TABLE {T} DROP COLUMN IF EXISTS "phone"',), AE)]
    assert probes(actions) == [f"SELECT NOT ({col_exists('phone')})"]


def test_drop_column() -> None:
    actions = plan_step(DropColumn(table="users", column="legacy"), ctx())
    assert shape(actions) == [U((f'ALTER TABLE {T} DROP COLUMN IF EXISTS "legacy"',), AE)]
    assert probes(actions) == [f"SELECT NOT ({col_exists('legacy')})"]


DUAL_WRITE_PLAN = """
additive:
  - add_column: {table: users, column: {name: email_lower, type: text}}
dual_write:
  - dual_write: {table: users, set: {email_lower: "lower(EMAIL)"}}
  - dual_write: {table: users, name: keep_me, set: {nick: "coalesce(first_name, 'x')"}}
cleanup:
  - drop_column: {table: users, column: email}
"""


def test_drop_column_drops_a_dual_write_trigger_reading_it_in_the_same_transaction() -> None:
    plan = plan_of(DUAL_WRITE_PLAN)
    actions = plan_step(plan.phases.cleanup[0], ctx(plan=plan))
    # One transaction: trigger, function, column; the other trigger reads first_name only.
    assert shape(actions) == [
        U(
            (
                f'DROP TRIGGER IF EXISTS "zdm_dw_users" ON {T}',
                'DROP FUNCTION IF EXISTS "public"."zdm_dw_users"()',
                f'ALTER TABLE {T} DROP COLUMN IF EXISTS "email"',
            ),
            AE,
        )
    ]
    assert statement_locks(actions) == [[AE, NONE, AE]]


@pytest.mark.parametrize(
    ("column", "dropped"),
    [
        ("email_lower", True),  # the column the trigger writes
        ("first_name", True),  # read by the second trigger
        ("name", False),  # `first_name` is another column; `'x'` is a string
        ("x", False),
    ],
)
def test_drop_column_drops_only_the_triggers_that_use_the_column(
    column: str, dropped: bool
) -> None:
    plan = plan_of(DUAL_WRITE_PLAN)
    actions = plan_step(DropColumn(table="users", column=column), ctx(plan=plan))
    text = all_sql(actions)
    assert ("DROP TRIGGER" in text) is dropped
    if column == "first_name":
        assert '"keep_me"' in text
        assert '"zdm_dw_users"' not in text


@pytest.mark.parametrize(
    ("expr", "column", "mentioned"),
    [
        ("lower(email)", "email", True),
        ("LOWER(EMAIL)", "email", True),  # bare names fold to lower case
        ('lower("Email")', "Email", True),
        ("lower(Email)", "Email", False),  # that is column email
        ("contact->>'phone'", "phone", False),  # a string, not a column
        ("first_name || last_name", "name", False),
        ("other.name", "name", False),  # another table's column
        ("1.5 * price", "price", True),
        ('"a ""q"" b" + 1', 'a "q" b', True),
        ("coalesce(nick, name)", "name", True),
    ],
)
def test_mentions(expr: str, column: str, mentioned: bool) -> None:
    assert names_column(expr, column) is mentioned


def test_drop_column_is_irreversible() -> None:
    with pytest.raises(Irreversible, match=r"drop_column users\.legacy"):
        plan_inverse(DropColumn(table="users", column="legacy"), ctx())


def test_rename_column_and_back() -> None:
    step = RenameColumn(table="users", column="name", to="full_name")
    forward = plan_step(step, ctx())
    assert shape(forward) == [U((f'ALTER TABLE {T} RENAME COLUMN "name" TO "full_name"',), AE)]
    assert probes(forward) == [f"SELECT ({col_exists('full_name')}) AND NOT ({col_exists('name')})"]
    back = plan_inverse(step, ctx())
    assert shape(back) == [U((f'ALTER TABLE {T} RENAME COLUMN "full_name" TO "name"',), AE)]


DEFAULT_OF_STATUS = (
    "SELECT jsonb_build_object('default', (SELECT pg_get_expr(d.adbin, d.adrelid)"
    " FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
    f" WHERE d.adrelid = to_regclass('{T}') AND a.attname = 'status' AND NOT a.attisdropped"
    " AND a.attgenerated = ''))"
)


@pytest.mark.parametrize(
    "step",
    [
        SetDefault(table="users", column="status", default="'new'"),
        DropDefault(table="users", column="status"),
    ],
    ids=["set_default", "drop_default"],
)
def test_default_steps_remember_the_default_they_replace(step: StepSpec) -> None:
    memo = plan_memo(step, ctx())
    assert memo is not None
    assert memo.as_string(None) == DEFAULT_OF_STATUS
    # Its inverse restores what the run recorded: the old default, or none at all.
    assert shape(plan_inverse(step, ctx(), {"default": "'old'::text"})) == [
        U((f"ALTER TABLE {T} ALTER COLUMN \"status\" SET DEFAULT 'old'::text",), AE, probe=False)
    ]
    assert shape(plan_inverse(step, ctx(), {"default": None})) == [
        U((f'ALTER TABLE {T} ALTER COLUMN "status" DROP DEFAULT',), AE, probe=False)
    ]
    # Nothing recorded (a step run by an older zdm): the old default is unknown.
    with pytest.raises(Irreversible, match=rf"{step.kind} users\.status: .*no record"):
        plan_inverse(step, ctx())


def test_set_default_and_drop_default() -> None:
    # Catalog only and idempotent by themselves: no probe needed.
    assert shape(plan_step(SetDefault(table="users", column="status", default="'new'"), ctx())) == [
        U((f"ALTER TABLE {T} ALTER COLUMN \"status\" SET DEFAULT 'new'",), AE, probe=False)
    ]
    assert shape(plan_step(DropDefault(table="users", column="status"), ctx())) == [
        U((f'ALTER TABLE {T} ALTER COLUMN "status" DROP DEFAULT',), AE, probe=False)
    ]


def test_other_column_steps_remember_nothing() -> None:
    assert plan_memo(RenameColumn(table="users", column="a", to="b"), ctx()) is None
    # Before PostgreSQL 18 a NOT NULL has no name and no validity: the plan says all.
    assert plan_memo(SetNotNull(table="users", column="a"), ctx(PG17)) is None
    assert plan_memo(DropNotNull(table="users", column="a"), ctx(PG17)) is None


NOT_NULL_OF_PHONE = (
    "SELECT jsonb_build_object('not_null', (SELECT jsonb_build_object('name', k.conname,"
    " 'definition', pg_get_constraintdef(k.oid), 'validated', k.convalidated)"
    " FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid"
    f" AND k.conkey = ARRAY[a.attnum] WHERE k.conrelid = to_regclass('{T}') AND k.contype = 'n'"
    " AND a.attname = 'phone'))"
)


@pytest.mark.parametrize("kind", [SetNotNull, DropNotNull])
def test_not_null_steps_remember_the_constraint_on_pg18(kind: type[StepSpec]) -> None:
    memo = plan_memo(kind(table="users", column="phone"), ctx(PG18))  # type: ignore[call-arg]
    assert memo is not None
    assert memo.as_string(None) == NOT_NULL_OF_PHONE


NOT_NULL = (
    'SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(\'"public"."users"\')'
    " AND attname = 'phone' AND attnotnull)"
)
NULLABLE = NOT_NULL.replace("SELECT EXISTS", "SELECT NOT EXISTS")


def test_set_not_null_pg17_check_validate_set_drop() -> None:
    actions = plan_step(SetNotNull(table="users", column="phone"), ctx(PG17))
    check = '"users_phone_zdm_not_null"'
    assert shape(actions) == [
        U((f'ALTER TABLE {T} ADD CONSTRAINT {check} CHECK ("phone" IS NOT NULL) NOT VALID',), AE),
        U((f"ALTER TABLE {T} VALIDATE CONSTRAINT {check}",), SUE),
        U(
            (
                f'ALTER TABLE {T} ALTER COLUMN "phone" SET NOT NULL',
                f"ALTER TABLE {T} DROP CONSTRAINT IF EXISTS {check}",
            ),
            AE,
        ),
    ]
    exists = (
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = "
        "to_regclass('\"public\".\"users\"') AND conname = 'users_phone_zdm_not_null'"
    )
    assert probes(actions) == [
        f"SELECT ({NOT_NULL}) OR ({exists}))",
        f"SELECT ({NOT_NULL}) OR ({exists} AND convalidated))",
        f"SELECT ({NOT_NULL}) AND (SELECT NOT ({exists})))",
    ]
    # Only the VALIDATE scans, and it lets reads and writes continue.
    assert [[s.scans for s in a.statements] for a in actions] == [[False], [True], [False, False]]  # type: ignore[union-attr]


def test_set_not_null_pg18_not_valid_then_validate() -> None:
    actions = plan_step(SetNotNull(table="users", column="phone"), ctx(PG18))
    name = '"users_phone_not_null"'
    assert shape(actions)[:2] == [
        U((f'ALTER TABLE {T} ADD CONSTRAINT {name} NOT NULL "phone" NOT VALID',), AE),
        U((f"ALTER TABLE {T} VALIDATE CONSTRAINT {name}",), SUE),
    ]
    first, second, third = probes(actions)
    assert first == NOT_NULL
    # The VALIDATE runs while the constraint of that name is NOT VALID or still to be added (so
    # a dry-run, before the run, shows that it will run).
    assert second == (
        f"SELECT ({NOT_NULL}) AND (SELECT NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid"
        f" = to_regclass('{T}') AND conname = 'users_phone_not_null' AND NOT convalidated))"
    )
    # A column that had a NOT VALID not-null constraint of another name keeps it (PostgreSQL 18
    # allows one a column): the third unit validates that one, by the name it finds, and is
    # skipped unless there is one.
    (validate_other,) = shape(actions)[2].sql
    assert validate_other.startswith("DO $zdm$")
    assert (
        f"WHERE c.conrelid = '{T}'::regclass AND c.contype = 'n' AND a.attname = 'phone'"
        " AND NOT c.convalidated;"
    ) in validate_other
    assert f"EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', '{T}', con);" in (
        validate_other
    )
    assert shape(actions)[2].lock == SUE
    assert third == (
        "SELECT NOT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_attribute a"
        " ON a.attrelid = c.conrelid AND c.conkey = ARRAY[a.attnum]"
        f" WHERE c.conrelid = to_regclass('{T}') AND c.contype = 'n' AND a.attname = 'phone'"
        " AND c.conname <> 'users_phone_not_null' AND NOT c.convalidated)"
    )


@pytest.mark.parametrize("version", [150000, PG17])
def test_undo_set_not_null_pg17_drops_not_null_and_a_leftover_check(version: int) -> None:
    actions = plan_inverse(SetNotNull(table="users", column="phone"), ctx(version))
    assert shape(actions) == [
        U((f'ALTER TABLE {T} ALTER COLUMN "phone" DROP NOT NULL',), AE),
        U((f'ALTER TABLE {T} DROP CONSTRAINT IF EXISTS "users_phone_zdm_not_null"',), AE),
    ]
    assert probes(actions)[0] == NULLABLE


@pytest.mark.parametrize("remembered", [{"not_null": None}, None], ids=["nullable", "no_record"])
def test_undo_set_not_null_pg18_drops_not_null(remembered: dict[str, Any] | None) -> None:
    # DROP NOT NULL also drops a NOT VALID not-null constraint left by a half-finished run.
    actions = plan_inverse(SetNotNull(table="users", column="phone"), ctx(PG18), remembered)
    assert shape(actions) == [U((f'ALTER TABLE {T} ALTER COLUMN "phone" DROP NOT NULL',), AE)]
    assert probes(actions) == [NULLABLE]


def test_undo_set_not_null_pg18_makes_a_not_valid_constraint_not_valid_again() -> None:
    before = {"name": "phone_nn", "definition": "NOT NULL phone NOT VALID", "validated": False}
    step = SetNotNull(table="users", column="phone")
    actions = plan_inverse(step, ctx(PG18), {"not_null": before})
    assert shape(actions) == [
        U(
            (
                f'ALTER TABLE {T} DROP CONSTRAINT "phone_nn",'
                ' ADD CONSTRAINT "phone_nn" NOT NULL phone NOT VALID',
            ),
            AE,
        )
    ]
    assert probes(actions) == [
        "SELECT NOT (SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid ="
        f" to_regclass('{T}') AND conname = 'phone_nn' AND convalidated))"
    ]
    # Validated before: the step found it done and changed nothing.
    assert plan_inverse(step, ctx(PG18), {"not_null": before | {"validated": True}}) == []


@pytest.mark.parametrize("version", [PG17, PG18])
def test_drop_not_null_and_its_inverse(version: int) -> None:
    # Before 18 (nothing recorded) or with no record (a step run by an older zdm): the inverse
    # is set_not_null.
    step = DropNotNull(table="users", column="phone")
    assert shape(plan_step(step, ctx(version))) == [
        U((f'ALTER TABLE {T} ALTER COLUMN "phone" DROP NOT NULL',), AE)
    ]
    assert shape(plan_inverse(step, ctx(version))) == shape(
        plan_step(SetNotNull(table="users", column="phone"), ctx(version))
    )


@pytest.mark.parametrize("validated", [True, False])
def test_undo_drop_not_null_pg18_restores_name_and_validity(validated: bool) -> None:
    definition = "NOT NULL phone" + ("" if validated else " NOT VALID")
    before = {"name": "phone_nn", "definition": definition, "validated": validated}
    actions = plan_inverse(
        DropNotNull(table="users", column="phone"), ctx(PG18), {"not_null": before}
    )
    expected = [U((f'ALTER TABLE {T} ADD CONSTRAINT "phone_nn" NOT NULL phone NOT VALID',), AE)]
    if validated:
        expected.append(U((f'ALTER TABLE {T} VALIDATE CONSTRAINT "phone_nn"',), SUE))
    assert shape(actions) == expected
    # Recorded without one: the column was nullable, the step dropped nothing.
    step = DropNotNull(table="users", column="phone")
    assert plan_inverse(step, ctx(PG18), {"not_null": None}) == []


ODD_T = "Us\"er 's"
ODD_C = 'Ph"one No'
STEPS: list[StepSpec] = [
    AddColumn(table=f"Sch.{ODD_T}", column=NewColumn(name=ODD_C, type="text", default="'x'")),
    DropColumn(table=f"Sch.{ODD_T}", column=ODD_C),
    RenameColumn(table=f"Sch.{ODD_T}", column=ODD_C, to=f"{ODD_C} 2"),
    SetDefault(table=f"Sch.{ODD_T}", column=ODD_C, default="'x'"),
    DropDefault(table=f"Sch.{ODD_T}", column=ODD_C),
    SetNotNull(table=f"Sch.{ODD_T}", column=ODD_C),
    DropNotNull(table=f"Sch.{ODD_T}", column=ODD_C),
]


@pytest.mark.parametrize("version", [PG17, PG18])
@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.kind)
def test_identifiers_are_always_quoted(step: StepSpec, version: int) -> None:
    actions = plan_step(step, ctx(version))
    with contextlib.suppress(Irreversible):
        actions += plan_inverse(step, ctx(version))
    text = all_sql(actions)
    assert ODD_T not in text
    # set_not_null's DO block (PostgreSQL 18) finds the column's constraint by the column's
    # name, a value: quoted as a literal.
    assert ODD_C not in text.replace("a.attname = 'Ph\"one No'", "")
    assert '"Sch"."Us""er \'s"' in text
    assert '"Ph""one No' in text
    if isinstance(step, SetNotNull | DropNotNull):
        suffix = "_zdm_not_null" if version < PG18 else "_not_null"
        assert f'"Us""er \'s_Ph""one No{suffix}"' in text
