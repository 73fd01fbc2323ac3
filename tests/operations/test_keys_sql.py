"""add_primary_key, rename_constraint, set_replica_identity: the exact SQL and inverses."""

from __future__ import annotations

import pytest
from ops_support import U, ctx, shape

from zdm.ddl import LockMode
from zdm.operations import Irreversible, plan_inverse, plan_memo, plan_step
from zdm.plan import AddPrimaryKey, RenameConstraint, SetReplicaIdentity

AE = LockMode.ACCESS_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE
NONE = LockMode.NONE
T = '"public"."users"'

GUARD = (
    "DO $zdm$DECLARE nullable name; BEGIN SELECT attname INTO nullable FROM pg_attribute"
    f" WHERE attrelid = to_regclass('{T}') AND attname = ANY ('{{tenant,id}}'::name[])"
    " AND NOT attnotnull LIMIT 1; IF nullable IS NOT NULL THEN RAISE EXCEPTION"
    " 'add_primary_key users_pkey: column % of public.users may be NULL; make it NOT NULL"
    " first (set_not_null), or attaching the key would scan the table under ACCESS"
    " EXCLUSIVE', nullable; END IF; END$zdm$"
)


def test_add_primary_key_builds_concurrently_then_attaches() -> None:
    step = AddPrimaryKey(table="users", name="users_pkey", columns=["tenant", "id"])
    assert shape(plan_step(step, ctx())) == [
        U((GUARD,), NONE),
        U(('DROP INDEX CONCURRENTLY IF EXISTS "public"."users_pkey"',), SUE, False),
        U(
            ('CREATE UNIQUE INDEX CONCURRENTLY "users_pkey" ON "public"."users" ("tenant", "id")',),
            SUE,
            False,
        ),
        U(
            (f'ALTER TABLE {T} ADD CONSTRAINT "users_pkey" PRIMARY KEY USING INDEX "users_pkey"',),
            AE,
        ),
    ]
    assert plan_memo(step, ctx()) is None
    assert shape(plan_inverse(step, ctx())) == [
        U((f'ALTER TABLE {T} DROP CONSTRAINT IF EXISTS "users_pkey"',), AE),
        U(('DROP INDEX CONCURRENTLY IF EXISTS "public"."users_pkey"',), SUE, False),
    ]


def test_rename_constraint_and_back() -> None:
    step = RenameConstraint(table="users", name="Old Key", to="new_key")
    assert shape(plan_step(step, ctx())) == [
        U((f'ALTER TABLE {T} RENAME CONSTRAINT "Old Key" TO "new_key"',), AE)
    ]
    assert shape(plan_inverse(step, ctx())) == [
        U((f'ALTER TABLE {T} RENAME CONSTRAINT "new_key" TO "Old Key"',), AE)
    ]


@pytest.mark.parametrize(
    ("kind", "index", "clause"),
    [
        ("full", None, "FULL"),
        ("nothing", None, "NOTHING"),
        ("default", None, "DEFAULT"),
        ("index", "users_email_key", 'USING INDEX "users_email_key"'),
    ],
)
def test_set_replica_identity(kind: str, index: str | None, clause: str) -> None:
    step = SetReplicaIdentity(table="users", type=kind, index=index)  # type: ignore[arg-type]
    assert shape(plan_step(step, ctx())) == [
        U((f"ALTER TABLE {T} REPLICA IDENTITY {clause}",), AE, probe=False)
    ]


def test_set_replica_identity_restores_the_one_it_replaced() -> None:
    step = SetReplicaIdentity(table="users", type="full")
    memo = plan_memo(step, ctx())
    assert memo is not None
    assert memo.as_string(None) == (
        "SELECT jsonb_build_object('identity', c.relreplident, 'index', (SELECT i.relname"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        f" WHERE x.indrelid = c.oid AND x.indisreplident)) FROM pg_class c WHERE c.oid ="
        f" to_regclass('{T}')"
    )
    assert shape(plan_inverse(step, ctx(), {"identity": "i", "index": "users_email_key"})) == [
        U((f'ALTER TABLE {T} REPLICA IDENTITY USING INDEX "users_email_key"',), AE, probe=False)
    ]
    assert shape(plan_inverse(step, ctx(), {"identity": "n", "index": None})) == [
        U((f"ALTER TABLE {T} REPLICA IDENTITY NOTHING",), AE, probe=False)
    ]
    with pytest.raises(Irreversible, match="no record"):
        plan_inverse(step, ctx())
