"""Exact SQL of create_index and drop_index (no database).

Every index statement is CONCURRENTLY, outside any transaction, under SHARE UPDATE EXCLUSIVE;
a build is preceded by the recovery unit that drops an INVALID index of the same name. The
inverse of drop_index builds the index again from what the run recorded of it.
"""

from __future__ import annotations

from typing import Any

import pytest
from ops_support import U, all_sql, ctx, probes, shape

from zdm.ddl import Check, LockMode, Txn
from zdm.engine.executor import render
from zdm.operations import Irreversible, plan_inverse, plan_memo, plan_step
from zdm.plan import CreateIndex, DropIndex, Settings

SUE = LockMode.SHARE_UPDATE_EXCLUSIVE
AE = LockMode.ACCESS_EXCLUSIVE

NOT_INVALID = (
    "SELECT NOT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = "
    'to_regclass(\'"public"."{}"\') AND NOT indisvalid)'
)
VALID = (
    "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = "
    'to_regclass(\'"public"."{}"\') AND indisvalid AND indisready)'
)
MISSING = 'SELECT to_regclass(\'"public"."{}"\') IS NULL'


def test_create_index_columns() -> None:
    actions = plan_step(
        CreateIndex(table="users", name="idx_users_phone", columns=["phone"]), ctx()
    )
    assert shape(actions) == [
        U(('DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_users_phone"',), SUE, False),
        U(
            ('CREATE INDEX CONCURRENTLY "idx_users_phone" ON "public"."users" ("phone")',),
            SUE,
            False,
        ),
    ]
    # The drop runs only over an INVALID leftover; the build is skipped once a valid index exists.
    assert probes(actions) == [
        NOT_INVALID.format("idx_users_phone"),
        VALID.format("idx_users_phone"),
    ]


def test_create_index_every_option() -> None:
    step = CreateIndex(
        table="app.users",
        name="idx_live_email",
        columns=["email", "tenant_id"],
        unique=True,
        include=["name"],
        where="deleted_at IS NULL",
    )
    assert shape(plan_step(step, ctx()))[1] == U(
        (
            'CREATE UNIQUE INDEX CONCURRENTLY "idx_live_email" ON "app"."users" '
            '("email", "tenant_id") INCLUDE ("name") WHERE deleted_at IS NULL',
        ),
        SUE,
        False,
    )


def test_create_index_expression_and_method() -> None:
    step = CreateIndex(
        table="docs", name="idx_docs_body", expression="to_tsvector('simple', body)", method="gin"
    )
    assert shape(plan_step(step, ctx()))[1].sql == (
        'CREATE INDEX CONCURRENTLY "idx_docs_body" ON "public"."docs" USING "gin" '
        "((to_tsvector('simple', body)))",
    )


def test_create_index_runs_without_lock_or_statement_timeout() -> None:
    # A lock timeout in the middle of a concurrent build would only leave an INVALID index.
    _, build = plan_step(CreateIndex(table="users", name="i", columns=["a"]), ctx())
    assert isinstance(build, Txn)
    rendered = [q.as_string(None) for q in render(build, Settings())]
    assert rendered == [
        "SET lock_timeout = '0'",
        "SET statement_timeout = '0'",
        'CREATE INDEX CONCURRENTLY "i" ON "public"."users" ("a")',
        "RESET lock_timeout",
        "RESET statement_timeout",
    ]


def test_undo_create_index_drops_it_in_the_tables_schema() -> None:
    step = CreateIndex(table="app.users", name="idx_a", columns=["a"])
    actions = plan_inverse(step, ctx())
    assert shape(actions) == [U(('DROP INDEX CONCURRENTLY IF EXISTS "app"."idx_a"',), SUE, False)]
    assert probes(actions) == ['SELECT to_regclass(\'"app"."idx_a"\') IS NULL']


def test_drop_index() -> None:
    actions = plan_step(DropIndex(name="idx_old"), ctx())
    assert shape(actions) == [
        U(('DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_old"',), SUE, False)
    ]
    assert probes(actions) == [MISSING.format("idx_old")]


def recorded(**changes: Any) -> dict[str, Any]:
    """An index as the run records it (catalog.index_record), plain unless `changes` say."""
    record: dict[str, Any] = {
        "name": "idx_old",
        "schema": "public",
        "table": "users",
        "definition": "CREATE INDEX idx_old ON public.users USING btree (lower(email))",
        "predicate": None,
        "method": "btree",
        "valid": True,
        "partitioned": False,
        "partition": False,
        "used_by": None,
        "tablespace": None,
        "clustered": False,
        "replica_identity": False,
        "comment": None,
        "statistics": None,
    }
    return {"index": record | changes}


def test_drop_index_remembers_the_index() -> None:
    memo = plan_memo(DropIndex(name="idx_old"), ctx())
    assert memo is not None
    text = memo.as_string(None)
    assert text.startswith("SELECT jsonb_build_object('index', (SELECT jsonb_build_object(")
    assert "pg_get_indexdef(i.indexrelid)" in text
    assert text.endswith('WHERE i.indexrelid = to_regclass(\'"public"."idx_old"\')))')


def test_undo_drop_index_builds_it_again_concurrently() -> None:
    actions = plan_inverse(DropIndex(name="idx_old"), ctx(), recorded())
    assert shape(actions) == [
        U(('DROP INDEX CONCURRENTLY IF EXISTS "public"."idx_old"',), SUE, False),
        U(
            ("CREATE INDEX CONCURRENTLY idx_old ON public.users USING btree (lower(email))",),
            SUE,
            False,
        ),
    ]
    # As create_index: an INVALID leftover is dropped first; a valid index skips the build.
    assert probes(actions) == [NOT_INVALID.format("idx_old"), VALID.format("idx_old")]


def test_undo_drop_index_restores_tablespace_and_settings() -> None:
    record = recorded(
        definition="CREATE UNIQUE INDEX idx_old ON public.users USING btree (lower(email))"
        " WITH (fillfactor='70') WHERE (deleted_at IS NULL)",
        predicate="(deleted_at IS NULL)",
        tablespace="fast ssd",
        statistics=[[1, 500]],
        clustered=True,
        comment="it's the old one",
        replica_identity=True,
    )
    actions = plan_inverse(DropIndex(name="idx_old"), ctx(), record)
    assert shape(actions)[1:] == [
        U(
            (
                "CREATE UNIQUE INDEX CONCURRENTLY idx_old ON public.users USING btree"
                " (lower(email)) WITH (fillfactor='70') TABLESPACE \"fast ssd\""
                " WHERE (deleted_at IS NULL)",
            ),
            SUE,
            False,
        ),
        U(
            (
                'ALTER INDEX "public"."idx_old" ALTER COLUMN 1 SET STATISTICS 500',
                'ALTER TABLE "public"."users" CLUSTER ON "idx_old"',
                "COMMENT ON INDEX \"public\".\"idx_old\" IS 'it''s the old one'",
            ),
            SUE,
            probe=False,
        ),
        U(('ALTER TABLE "public"."users" REPLICA IDENTITY USING INDEX "idx_old"',), AE),
    ]
    assert probes(actions)[-1] == (
        "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid ="
        ' to_regclass(\'"public"."idx_old"\') AND indisreplident)'
    )


def test_undo_drop_index_without_a_record_is_refused() -> None:
    # A step run by an older zdm: nothing says how the index was defined.
    with pytest.raises(Irreversible, match=r"drop_index idx_old: .*no record"):
        plan_inverse(DropIndex(name="idx_old"), ctx())


def test_undo_drop_index_refuses_an_invalid_index() -> None:
    with pytest.raises(
        Irreversible, match=r"drop_index idx_old: index public\.idx_old was INVALID"
    ):
        plan_inverse(DropIndex(name="idx_old"), ctx(), recorded(valid=False))


def test_undo_drop_index_of_nothing_does_nothing() -> None:
    assert plan_inverse(DropIndex(name="idx_old"), ctx(), {"index": None}) == []


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"used_by": "users_pkey"}, "constraint users_pkey uses"),
        ({"partitioned": True}, "index of a partitioned table"),
        ({"partition": True}, "belongs to a partitioned index"),
    ],
)
def test_undo_drop_index_postgres_keeps_only_checks(changes: dict[str, Any], why: str) -> None:
    # PostgreSQL refuses to drop these concurrently: the step cannot have dropped them.
    (check,) = plan_inverse(DropIndex(name="idx_old"), ctx(), recorded(**changes))
    assert isinstance(check, Check) and check.expect is True
    assert check.query.as_string(None) == 'SELECT to_regclass(\'"public"."idx_old"\') IS NOT NULL'
    assert why in check.label


@pytest.mark.parametrize(
    "step",
    [
        CreateIndex(
            table='S.Ta"ble x',
            name='Idx "A" b',
            columns=['Co"l 1', "Col2"],
            include=['In"c'],
        ),
        DropIndex(name='S.Idx "A" b'),
    ],
    ids=lambda s: s.kind,
)
def test_identifiers_are_always_quoted(step: CreateIndex | DropIndex) -> None:
    actions = plan_step(step, ctx())
    if isinstance(step, CreateIndex):
        actions += plan_inverse(step, ctx())
    text = all_sql(actions)
    for raw in ('Ta"ble x', 'Idx "A" b', 'Co"l 1', 'In"c'):
        assert raw not in text
    assert '"S"."Idx ""A"" b"' in text
    if isinstance(step, CreateIndex):
        assert (
            'CREATE INDEX CONCURRENTLY "Idx ""A"" b" ON "S"."Ta""ble x" ("Co""l 1", "Col2")'
            ' INCLUDE ("In""c")'
        ) in text
