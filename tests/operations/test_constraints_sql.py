"""Exact SQL of the constraint steps and their inverses (no database).

A constraint is added NOT VALID (short ACCESS EXCLUSIVE, no scan) and validated in its own
transaction under SHARE UPDATE EXCLUSIVE; a unique constraint is a concurrent unique index
build, then ADD CONSTRAINT … USING INDEX.
"""

from __future__ import annotations

import contextlib

import pytest
from ops_support import U, all_sql, ctx, probes, shape

from zdm.ddl import LockMode, Txn
from zdm.engine.executor import render
from zdm.operations import Irreversible, plan_inverse, plan_step
from zdm.plan import (
    AddCheck,
    AddForeignKey,
    AddUnique,
    DropConstraint,
    ForeignRef,
    Settings,
    StepSpec,
    ValidateConstraint,
)

AE = LockMode.ACCESS_EXCLUSIVE
SRE = LockMode.SHARE_ROW_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE
T = '"public"."users"'


def exists(name: str) -> str:
    return (
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = "
        f"to_regclass('{T}') AND conname = '{name}')"
    )


def validated(name: str) -> str:
    return exists(name)[:-1] + " AND convalidated)"


def test_add_check_not_valid_then_validate() -> None:
    actions = plan_step(
        AddCheck(table="users", name="check_phone", check="phone ~ '^[0-9]+$'"), ctx()
    )
    assert shape(actions) == [
        U(
            (
                f"ALTER TABLE {T} ADD CONSTRAINT \"check_phone\" CHECK (phone ~ '^[0-9]+$') "
                "NOT VALID",
            ),
            AE,
        ),
        U((f'ALTER TABLE {T} VALIDATE CONSTRAINT "check_phone"',), SUE),
    ]
    assert probes(actions) == [exists("check_phone"), validated("check_phone")]


def test_the_add_is_short_and_the_validate_may_wait() -> None:
    add, check = plan_step(AddCheck(table="users", name="c", check="a > 0"), ctx())
    assert isinstance(add, Txn)
    assert isinstance(check, Txn)
    settings = Settings()
    assert [q.as_string(None) for q in render(add, settings)] == [
        "BEGIN",
        "SET LOCAL lock_timeout = '200ms'",
        "SET LOCAL statement_timeout = '0ms'",
        f'ALTER TABLE {T} ADD CONSTRAINT "c" CHECK (a > 0) NOT VALID',
        "COMMIT",
    ]
    assert [q.as_string(None) for q in render(check, settings)] == [
        "BEGIN",
        "SET LOCAL lock_timeout = '0'",
        "SET LOCAL statement_timeout = '0'",
        f'ALTER TABLE {T} VALIDATE CONSTRAINT "c"',
        "COMMIT",
    ]


def test_add_check_without_validate() -> None:
    actions = plan_step(AddCheck(table="users", name="c", check="a > 0", validate=False), ctx())
    assert shape(actions) == [
        U((f'ALTER TABLE {T} ADD CONSTRAINT "c" CHECK (a > 0) NOT VALID',), AE)
    ]


def test_add_foreign_key() -> None:
    step = AddForeignKey(
        table="users",
        name="fk_users_org",
        columns=["org_id", "region"],
        references=ForeignRef(table="core.orgs", columns=["id", "region"]),
        on_delete="cascade",
    )
    actions = plan_step(step, ctx())
    assert shape(actions) == [
        U(
            (
                f'ALTER TABLE {T} ADD CONSTRAINT "fk_users_org" FOREIGN KEY ("org_id", "region") '
                'REFERENCES "core"."orgs" ("id", "region") ON DELETE CASCADE NOT VALID',
            ),
            SRE,
        ),
        U((f'ALTER TABLE {T} VALIDATE CONSTRAINT "fk_users_org"',), SUE),
    ]
    assert probes(actions) == [exists("fk_users_org"), validated("fk_users_org")]


def test_add_foreign_key_without_validate_or_on_delete() -> None:
    step = AddForeignKey(
        table="users",
        name="fk",
        columns=["org_id"],
        references=ForeignRef(table="orgs", columns=["id"]),
        validate=False,
    )
    assert shape(plan_step(step, ctx())) == [
        U(
            (
                f'ALTER TABLE {T} ADD CONSTRAINT "fk" FOREIGN KEY ("org_id") '
                'REFERENCES "public"."orgs" ("id") NOT VALID',
            ),
            SRE,
        )
    ]


def test_add_unique_builds_concurrently_then_attaches() -> None:
    actions = plan_step(
        AddUnique(table="users", name="uq_email", columns=["email", "tenant"]), ctx()
    )
    assert shape(actions) == [
        U(('DROP INDEX CONCURRENTLY IF EXISTS "public"."uq_email"',), SUE, False),
        U(
            (
                'CREATE UNIQUE INDEX CONCURRENTLY "uq_email" ON "public"."users" ("email", "tenant")',
            ),
            SUE,
            False,
        ),
        U((f'ALTER TABLE {T} ADD CONSTRAINT "uq_email" UNIQUE USING INDEX "uq_email"',), AE),
    ]
    recover, build, attach = probes(actions)
    assert recover is not None
    assert "NOT indisvalid" in recover
    # Once attached, the index belongs to the constraint: the build is done either way.
    assert build == (
        "SELECT (SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = "
        'to_regclass(\'"public"."uq_email"\') AND indisvalid AND indisready)) OR '
        f"({exists('uq_email')})"
    )
    assert attach == exists("uq_email")


@pytest.mark.parametrize(
    "step",
    [
        AddCheck(table="users", name="c", check="a > 0"),
        AddForeignKey(
            table="users", name="c", columns=["a"], references=ForeignRef(table="o", columns=["id"])
        ),
    ],
    ids=lambda s: s.kind,
)
def test_undo_add_check_or_foreign_key_drops_it(step: StepSpec) -> None:
    actions = plan_inverse(step, ctx())
    assert shape(actions) == [U((f'ALTER TABLE {T} DROP CONSTRAINT IF EXISTS "c"',), AE)]
    assert probes(actions) == [f"SELECT NOT ({exists('c')})"]


def test_undo_add_unique_drops_the_constraint_then_a_lone_index() -> None:
    actions = plan_inverse(AddUnique(table="users", name="uq", columns=["a"]), ctx())
    assert shape(actions) == [
        U((f'ALTER TABLE {T} DROP CONSTRAINT IF EXISTS "uq"',), AE),
        U(('DROP INDEX CONCURRENTLY IF EXISTS "public"."uq"',), SUE, False),
    ]
    assert probes(actions)[1] == 'SELECT to_regclass(\'"public"."uq"\') IS NULL'


def test_validate_constraint() -> None:
    step = ValidateConstraint(table="users", name="c")
    actions = plan_step(step, ctx())
    assert shape(actions) == [U((f'ALTER TABLE {T} VALIDATE CONSTRAINT "c"',), SUE)]
    assert probes(actions) == [validated("c")]
    (undo,) = plan_inverse(step, ctx())
    # Rolled back by re-adding the constraint NOT VALID from its own definition.
    assert isinstance(undo, Txn) and undo.lock == AE
    text = undo.statements[0].sql.as_string(None)
    assert text.startswith("DO $zdm$")
    assert "DROP CONSTRAINT %I, ADD CONSTRAINT %I %s NOT VALID" in text
    assert probes([undo]) == [f"SELECT NOT ({validated('c')})"]


def test_drop_constraint() -> None:
    step = DropConstraint(table="users", name="c")
    actions = plan_step(step, ctx())
    assert shape(actions) == [U((f'ALTER TABLE {T} DROP CONSTRAINT IF EXISTS "c"',), AE)]
    assert probes(actions) == [f"SELECT NOT ({exists('c')})"]
    with pytest.raises(Irreversible, match="drop_constraint c"):
        plan_inverse(step, ctx())


TBL = "S.Ta\"ble 'x"
NAME = 'Con"str a'
COL = 'Co"l A'


@pytest.mark.parametrize(
    "step",
    [
        AddCheck(table=TBL, name=NAME, check="true"),
        AddForeignKey(
            table=TBL,
            name=NAME,
            columns=[COL],
            references=ForeignRef(table="R.Ta\"ble 'y", columns=[COL]),
        ),
        AddUnique(table=TBL, name=NAME, columns=[COL]),
        ValidateConstraint(table=TBL, name=NAME),
        DropConstraint(table=TBL, name=NAME),
    ],
    ids=lambda s: s.kind,
)
def test_identifiers_are_always_quoted(step: StepSpec) -> None:
    actions = plan_step(step, ctx())
    # validate_constraint's inverse passes the name as a value to format('%I'), which quotes it.
    if not isinstance(step, ValidateConstraint):
        with contextlib.suppress(Irreversible):
            actions += plan_inverse(step, ctx())
    text = all_sql(actions)
    for raw in ('Ta"ble', NAME, COL):
        assert raw not in text
    assert '"S"."Ta""ble \'x"' in text
    assert '"Con""str a"' in text
    for probe in probes(actions):
        assert probe is not None
        # Names as values in probes: string literals of quoted names (the table, or the index).
        assert '\'"S"."Ta""ble \'\'x"\'' in probe or '\'"S"."Con""str a"\'' in probe
