"""Exact SQL of create_table, drop_table, rename_table and their inverses (no database)."""

from __future__ import annotations

import contextlib

import pytest
from ops_support import U, all_sql, ctx, probes, shape

from zdm.ddl import LockMode
from zdm.operations import Irreversible, plan_inverse, plan_step
from zdm.plan import ColumnDef, ColumnRef, CreateTable, DropTable, RenameTable

AE = LockMode.ACCESS_EXCLUSIVE
NONE = LockMode.NONE
SRE = LockMode.SHARE_ROW_EXCLUSIVE


def test_create_table_plain() -> None:
    step = CreateTable(
        table="widgets",
        columns=[
            ColumnDef(name="a", type="integer", nullable=False),
            ColumnDef(name="b", type="text", default="'x'", check="length(b) > 0"),
        ],
        primary_key=["a", "b"],
    )
    actions = plan_step(step, ctx())
    assert shape(actions) == [
        U(
            (
                'CREATE TABLE "public"."widgets" ("a" integer NOT NULL, '
                "\"b\" text DEFAULT 'x' CHECK (length(b) > 0), "
                'PRIMARY KEY ("a", "b"))',
            ),
            NONE,
        )
    ]
    assert probes(actions) == ['SELECT to_regclass(\'"public"."widgets"\') IS NOT NULL']


def test_create_table_with_references_locks_the_referenced_table() -> None:
    step = CreateTable(
        table="shop.widgets",
        columns=[
            ColumnDef(name="id", type="bigint", primary_key=True),
            ColumnDef(
                name="item_id",
                type="bigint",
                unique=True,
                references=ColumnRef(table="items", on_delete="set null"),
            ),
        ],
    )
    actions = plan_step(step, ctx())
    assert shape(actions) == [
        U(
            (
                'CREATE TABLE "shop"."widgets" ("id" bigint PRIMARY KEY, "item_id" bigint UNIQUE '
                'REFERENCES "public"."items" ("id") ON DELETE SET NULL)',
            ),
            SRE,
        )
    ]
    (txn,) = actions
    assert txn.tables[0].name == "items"  # type: ignore[union-attr]


def test_undo_create_table_drops_it() -> None:
    step = CreateTable(table="widgets", columns=[ColumnDef(name="a", type="int")])
    actions = plan_inverse(step, ctx())
    assert shape(actions) == [U(('DROP TABLE IF EXISTS "public"."widgets"',), AE)]
    assert probes(actions) == ['SELECT to_regclass(\'"public"."widgets"\') IS NULL']


def test_drop_table() -> None:
    actions = plan_step(DropTable(table="app.old_stuff"), ctx())
    assert shape(actions) == [U(('DROP TABLE IF EXISTS "app"."old_stuff"',), AE)]
    assert probes(actions) == ['SELECT to_regclass(\'"app"."old_stuff"\') IS NULL']


def test_drop_table_is_irreversible() -> None:
    with pytest.raises(Irreversible, match="drop_table old_stuff"):
        plan_inverse(DropTable(table="old_stuff"), ctx())


def test_rename_table_and_back() -> None:
    step = RenameTable(table="app.items", to="items_v2")
    forward = plan_step(step, ctx())
    assert shape(forward) == [U(('ALTER TABLE "app"."items" RENAME TO "items_v2"',), AE)]
    assert probes(forward) == [
        'SELECT (SELECT to_regclass(\'"app"."items_v2"\') IS NOT NULL)'
        ' AND (SELECT to_regclass(\'"app"."items"\') IS NULL)'
    ]
    back = plan_inverse(step, ctx())
    assert shape(back) == [U(('ALTER TABLE "app"."items_v2" RENAME TO "items"',), AE)]
    assert probes(back) == [
        'SELECT (SELECT to_regclass(\'"app"."items"\') IS NOT NULL)'
        ' AND (SELECT to_regclass(\'"app"."items_v2"\') IS NULL)'
    ]


def test_unqualified_names_take_the_plans_schema() -> None:
    actions = plan_step(RenameTable(table="items", to="goods"), ctx(schema="Shop"))
    assert shape(actions)[0].sql == ('ALTER TABLE "Shop"."items" RENAME TO "goods"',)


ODD = "Or\"der 'X' Items"
ODD_COL = 'Unit "Price"'


@pytest.mark.parametrize(
    "step",
    [
        CreateTable(
            table=f"My Schema.{ODD}",
            columns=[
                ColumnDef(name=ODD_COL, type="numeric", primary_key=True),
                ColumnDef(
                    name="Ref", type="bigint", references=ColumnRef(table=ODD, column=ODD_COL)
                ),
            ],
            primary_key=None,
        ),
        CreateTable(
            table=ODD, columns=[ColumnDef(name=ODD_COL, type="int")], primary_key=[ODD_COL]
        ),
        DropTable(table=f"My Schema.{ODD}"),
        RenameTable(table=f"My Schema.{ODD}", to=f"{ODD} v2"),
    ],
    ids=lambda s: s.kind,
)
def test_identifiers_are_always_quoted(step: CreateTable | DropTable | RenameTable) -> None:
    actions = plan_step(step, ctx())
    with contextlib.suppress(Irreversible):
        actions += plan_inverse(step, ctx())
    text = all_sql(actions)
    # A quoted identifier doubles every `"`, so the raw name never appears in correct SQL.
    assert ODD not in text
    assert ODD_COL not in text
    assert '"Or""der \'X\' Items"' in text
    if "My Schema" in step.table:
        assert '"My Schema"."Or""der \'X\' Items"' in text
    for probe in probes(actions):
        assert probe is not None
        assert "\"Or\"\"der ''X'' Items\"" in probe  # the quoted name, as a string literal
