"""Exact SQL of the constraint steps and their inverses (no database).

A constraint is added NOT VALID (short ACCESS EXCLUSIVE, no scan) and validated in its own
transaction under SHARE UPDATE EXCLUSIVE; a unique constraint is a concurrent unique index
build, then ADD CONSTRAINT … USING INDEX.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from ops_support import U, all_sql, ctx, probes, shape

from zdm.ddl import Check, LockMode, Txn
from zdm.engine.executor import render
from zdm.operations import Irreversible, plan_inverse, plan_memo, plan_step
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
        "SET LOCAL lock_timeout = '50ms'",
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
    # Writes to the referenced table wait on the NOT VALID add too: zdm watches both tables.
    add = actions[0]
    assert isinstance(add, Txn)
    assert [str(t) for t in add.tables] == ["public.users", "core.orgs"]


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
    memo = plan_memo(step, ctx())
    assert memo is not None
    text = memo.as_string(None)
    assert text.startswith("SELECT jsonb_build_object('constraint', (SELECT jsonb_build_object(")
    assert "pg_get_constraintdef(con.oid)" in text and "con.convalidated" in text
    assert text.endswith(f"WHERE con.conrelid = to_regclass('{T}') AND con.conname = 'c'))")


def constraint(kind: str, definition: str, **changes: Any) -> dict[str, Any]:
    """A constraint as the run records it (catalog.constraint_record)."""
    record: dict[str, Any] = {
        "type": kind,
        "definition": definition,
        "validated": True,
        "deferrable": False,
        "deferred": False,
        "inherited": False,
        "children": False,
        "columns": ["email"],
        "references": None,
        "comment": None,
        "index": None,
    }
    return {"constraint": record | changes}


def unique_index(name: str = "c", **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schema": "public",
        "table": "users",
        "definition": f"CREATE UNIQUE INDEX {name} ON public.users USING btree (email)",
        "predicate": None,
        "method": "btree",
        "valid": True,
        "partitioned": False,
        "partition": False,
        "used_by": name,
        "tablespace": None,
        "clustered": False,
        "replica_identity": False,
        "comment": None,
        "statistics": None,
    } | changes


DROP_C = DropConstraint(table="users", name="c")


def test_undo_drop_constraint_check_stays_not_valid() -> None:
    record = constraint("c", "CHECK ((qty < 1000)) NOT VALID", validated=False)
    actions = plan_inverse(DROP_C, ctx(), record)
    assert shape(actions) == [
        U((f'ALTER TABLE {T} ADD CONSTRAINT "c" CHECK ((qty < 1000)) NOT VALID',), AE)
    ]
    assert probes(actions) == [exists("c")]


def test_undo_drop_constraint_foreign_key_is_validated_again() -> None:
    fk = "FOREIGN KEY (org_id) REFERENCES public.orgs(id) ON DELETE SET NULL DEFERRABLE"
    record = constraint("f", fk, references=["public", "orgs"], comment="who's the org")
    actions = plan_inverse(DROP_C, ctx(), record)
    assert shape(actions) == [
        U((f'ALTER TABLE {T} ADD CONSTRAINT "c" {fk} NOT VALID',), SRE),
        U((f'ALTER TABLE {T} VALIDATE CONSTRAINT "c"',), SUE),
        U(
            (f"COMMENT ON CONSTRAINT \"c\" ON {T} IS 'who''s the org'",),
            LockMode.ACCESS_SHARE,
            probe=False,
        ),
    ]
    assert probes(actions)[:2] == [exists("c"), validated("c")]


def test_undo_drop_constraint_not_null_keeps_its_name() -> None:
    # PostgreSQL 18: a not-null constraint of its own name, added as set_not_null adds one.
    record = constraint("n", "NOT NULL email")
    assert shape(plan_inverse(DROP_C, ctx(), record)) == [
        U((f'ALTER TABLE {T} ADD CONSTRAINT "c" NOT NULL email NOT VALID',), AE),
        U((f'ALTER TABLE {T} VALIDATE CONSTRAINT "c"',), SUE),
    ]


def test_undo_drop_constraint_unique_builds_its_index_then_attaches_it() -> None:
    record = constraint(
        "u", "UNIQUE (email) DEFERRABLE", deferrable=True, index=unique_index(clustered=True)
    )
    actions = plan_inverse(DROP_C, ctx(), record)
    assert shape(actions) == [
        U(('DROP INDEX CONCURRENTLY IF EXISTS "public"."c"',), SUE, False),
        U(("CREATE UNIQUE INDEX CONCURRENTLY c ON public.users USING btree (email)",), SUE, False),
        U((f'ALTER TABLE {T} ADD CONSTRAINT "c" UNIQUE USING INDEX "c" DEFERRABLE',), AE),
        U((f'ALTER TABLE {T} CLUSTER ON "c"',), SUE, probe=False),
    ]
    # The build is skipped once the index is valid or the constraint is back (as add_unique).
    assert probes(actions)[1:3] == [
        "SELECT (SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid ="
        ' to_regclass(\'"public"."c"\') AND indisvalid AND indisready))'
        f" OR ({exists('c')})",
        exists("c"),
    ]


def test_undo_drop_constraint_primary_key_checks_not_null_before_attaching() -> None:
    record = constraint("p", "PRIMARY KEY (id)", columns=["id"], index=unique_index("users_pkey"))
    actions = plan_inverse(DropConstraint(table="users", name="users_pkey"), ctx(), record)
    check = actions[2]
    assert isinstance(check, Check) and check.expect is True
    # Nullable columns would make the attach scan the table under ACCESS EXCLUSIVE.
    assert check.query.as_string(None) == (
        f"SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('{T}')"
        " AND attname = ANY ('{id}'::name[]) AND NOT attnotnull)"
    )
    assert shape([actions[3]]) == [
        U(
            (f'ALTER TABLE {T} ADD CONSTRAINT "users_pkey" PRIMARY KEY USING INDEX "users_pkey"',),
            AE,
        )
    ]


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (None, "no record of how the constraint was defined"),
        (
            constraint("x", "EXCLUDE USING gist (span WITH &&)"),
            "an EXCLUDE constraint is only added with its index built under ACCESS EXCLUSIVE",
        ),
        (constraint("c", "CHECK ((qty > 0))", children=True), "has partitions or inheritance"),
        (
            constraint(
                "u", "UNIQUE (id, span WITHOUT OVERLAPS)", index=unique_index(method="gist")
            ),
            "its index is gist",
        ),
        ({"constraint": None}, None),
    ],
    ids=["no_record", "exclude", "children", "not_btree", "nothing"],
)
def test_undo_drop_constraint_refuses_what_it_cannot_restore(
    record: dict[str, Any] | None, why: str | None
) -> None:
    if why is None:
        assert plan_inverse(DROP_C, ctx(), record) == []  # there was nothing to drop
        return
    with pytest.raises(Irreversible, match=rf"drop_constraint users\.c: .*{why}"):
        plan_inverse(DROP_C, ctx(), record)


def test_undo_drop_constraint_of_an_inherited_one_only_checks() -> None:
    # PostgreSQL refuses to drop an inherited constraint: the step cannot have dropped it.
    (check,) = plan_inverse(DROP_C, ctx(), constraint("c", "CHECK (true)", inherited=True))
    assert isinstance(check, Check) and check.expect is True
    assert check.query.as_string(None) == exists("c")


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
