"""Exact SQL of the steps on a partitioned table (no database): the tree is given as the engine
would read it: `events` by range, `events_2025` partitioned again by hash, and a default."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ops_support import PG17, PG18, all_sql, ctx

from zdm.ddl import BackfillJob, LockMode, Table, Txn
from zdm.ddl.partitions import Partition, Partitioning, derived_name
from zdm.operations import Context, plan_inverse, plan_refusal, plan_step
from zdm.plan import AddCheck, AddForeignKey, AddUnique, Backfill, CreateIndex, ForeignRef

ROOT = Table("public", "events")
MID = Table("public", "events_2025")
TREE = Partitioning(
    ROOT,
    (
        Partition(1, MID, ROOT, False),
        Partition(1, Table("public", "events_default"), ROOT, True),
        Partition(2, Table("public", "events_2025_h0"), MID, True),
        Partition(2, Table("public", "events_2025_h1"), MID, True),
    ),
    ("at", "id"),
)


def pctx(version: int = PG18) -> Context:
    return replace(ctx(version), partitions={ROOT: TREE})


def statements(actions: list[object]) -> list[str]:
    return [s.text() for a in actions if isinstance(a, Txn) for s in a.statements]


def test_create_index_on_only_each_level_concurrently_each_leaf_attached_deepest_first() -> None:
    actions = plan_step(CreateIndex(table="events", name="ix", columns=["kind"]), pctx())
    assert statements(actions) == [
        'CREATE INDEX "ix" ON ONLY "public"."events" ("kind")',
        'CREATE INDEX "ix_events_2025" ON ONLY "public"."events_2025" ("kind")',
        'DROP INDEX CONCURRENTLY IF EXISTS "public"."ix_events_default"',
        'CREATE INDEX CONCURRENTLY "ix_events_default" ON "public"."events_default" ("kind")',
        'DROP INDEX CONCURRENTLY IF EXISTS "public"."ix_events_2025_h0"',
        'CREATE INDEX CONCURRENTLY "ix_events_2025_h0" ON "public"."events_2025_h0" ("kind")',
        'DROP INDEX CONCURRENTLY IF EXISTS "public"."ix_events_2025_h1"',
        'CREATE INDEX CONCURRENTLY "ix_events_2025_h1" ON "public"."events_2025_h1" ("kind")',
        'ALTER INDEX "public"."ix_events_2025" ATTACH PARTITION "public"."ix_events_2025_h0"',
        'ALTER INDEX "public"."ix_events_2025" ATTACH PARTITION "public"."ix_events_2025_h1"',
        'ALTER INDEX "public"."ix" ATTACH PARTITION "public"."ix_events_2025"',
        'ALTER INDEX "public"."ix" ATTACH PARTITION "public"."ix_events_default"',
        "DO $zdm$BEGIN RAISE EXCEPTION 'index public.ix is not valid: a partition''s index is"
        " missing or not attached'; END$zdm$",
    ]
    txns = [a for a in actions if isinstance(a, Txn)]
    assert txns[0].lock is LockMode.SHARE and txns[0].transactional
    assert all(not t.transactional for t in txns[2:8])
    assert all(t.lock is LockMode.ACCESS_EXCLUSIVE and t.transactional for t in txns[8:-1])
    assert all(t.skip_if is not None for t in txns)
    last = actions[-1]
    assert isinstance(last, Txn) and last.skip_if is not None
    assert '"public"."ix"' in last.skip_if.as_string(None)


def test_unique_index_keeps_its_options_and_undo_drops_parent_then_loose_leaves() -> None:
    step = CreateIndex(table="events", name="u", columns=["id", "at"], unique=True, where="id > 0")
    assert plan_refusal(step, pctx()) is None
    text = statements(plan_step(step, pctx()))
    assert text[0] == 'CREATE UNIQUE INDEX "u" ON ONLY "public"."events" ("id", "at") WHERE id > 0'
    undo = statements(plan_inverse(step, pctx()))
    assert undo[0] == 'DROP INDEX IF EXISTS "public"."u"'
    assert 'DROP INDEX CONCURRENTLY IF EXISTS "public"."u_events_2025_h0"' in undo
    assert 'DROP INDEX IF EXISTS "public"."u_events_2025"' in undo


@pytest.mark.parametrize(
    ("columns", "missing"), [(["id"], "at"), (["kind"], "at, id"), (["at", "kind"], "id")]
)
def test_unique_keys_without_the_partition_key_are_refused(
    columns: list[str], missing: str
) -> None:
    why = plan_refusal(AddUnique(table="events", name="k", columns=columns), pctx())
    assert why is not None and f"add column(s) {missing} to its columns" in why


def test_add_unique_builds_each_leaf_then_adopts() -> None:
    text = statements(plan_step(AddUnique(table="events", name="k", columns=["id", "at"]), pctx()))
    assert (
        'ALTER TABLE "public"."events_2025_h1" ADD CONSTRAINT "k_events_2025_h1"'
        ' UNIQUE USING INDEX "k_events_2025_h1"' in text
    )
    assert text[-1] == 'ALTER TABLE "public"."events" ADD CONSTRAINT "k" UNIQUE ("id", "at")'
    assert not any(" ON ONLY " in t for t in text)


def test_add_check_validates_leaves_then_levels_up() -> None:
    text = statements(plan_step(AddCheck(table="events", name="c", check="id > 0"), pctx()))
    validated = [t.split('"')[3] for t in text if "VALIDATE" in t]
    assert text[0].endswith("NOT VALID")
    assert validated == [
        "events_default",
        "events_2025_h0",
        "events_2025_h1",
        "events_2025",
        "events",
    ]


def test_foreign_key_from_a_partitioned_table_per_version() -> None:
    step = AddForeignKey(
        table="events", name="fk", columns=["id"], references=ForeignRef(table="t", columns=["id"])
    )
    pg18 = statements(plan_step(step, pctx(PG18)))
    assert pg18[0].endswith("NOT VALID") and '"public"."events" ADD' in pg18[0]
    pg17 = statements(plan_step(step, pctx(PG17)))
    assert pg17[-1] == (
        'ALTER TABLE "public"."events" ADD CONSTRAINT "fk" FOREIGN KEY ("id")'
        ' REFERENCES "public"."t" ("id")'
    )
    assert sum("NOT VALID" in t for t in pg17) == 3  # one per leaf
    unvalidated = step.model_copy(update={"validate": False})
    assert plan_refusal(unvalidated, pctx(PG18)) is None
    assert "PostgreSQL 17 takes no NOT VALID foreign key" in (
        plan_refusal(unvalidated, pctx(PG17)) or ""
    )


def test_backfill_one_job_per_leaf_with_its_own_checkpoints() -> None:
    jobs = plan_step(Backfill(table="events", set={"b": "a"}), pctx())
    assert [(j.table.name, j.part) for j in jobs if isinstance(j, BackfillJob)] == [
        ("events_default", "public.events_default"),
        ("events_2025_h0", "public.events_2025_h0"),
        ("events_2025_h1", "public.events_2025_h1"),
    ]


def test_derived_names_fit_postgres() -> None:
    long = derived_name("x" * 60, Table("public", "p" * 60))
    assert len(long) == 63 and long != derived_name("x" * 60, Table("public", "q" * 60))
    assert all_sql(plan_step(CreateIndex(table="plain", name="i", columns=["a"]), pctx())) == (
        'DROP INDEX CONCURRENTLY IF EXISTS "public"."i"\n'
        'CREATE INDEX CONCURRENTLY "i" ON "public"."plain" ("a")'
    )
