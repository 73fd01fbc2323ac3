"""High-level `changes`: their exact expansion into the five phases, and their whole lifecycle
on PostgreSQL with the old and the new application version writing at once.

The lifecycle of each change kind: the plan runs to its gate (before cleanup) while an old
writer uses the base table and a new writer the version views; both shapes must agree on every
row. Rollback must leave the catalog exactly as it was; the plan then runs again, both versions
write again, and `--continue` completes it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "operations"))
from ops_support import snapshot

from zdm import api
from zdm.cli import app
from zdm.engine.facts import read_column_facts
from zdm.logs import configure
from zdm.plan import PlanError, parse_plan, plan_json_schema
from zdm.plan.expand import (
    ColumnFacts,
    ForeignKeyFact,
    IndexFact,
    ReferenceFact,
    _rename_not_null,
    default_version_schema,
)

Conn = psycopg.Connection[Any]


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> None:
    configure()


def expanded(text: str, facts: dict[tuple[str, str, str], ColumnFacts] | None = None) -> Any:
    """The expanded plan's phases as plain data, as `zdm expand` prints them."""
    reader = None if facts is None else (lambda s, t, c: facts.get((s, t, c)))
    loaded = parse_plan(text, "p.yaml", facts=reader)
    data = loaded.plan.model_dump(by_alias=True, exclude_defaults=True)
    return {phase: steps for phase, steps in data["phases"].items() if steps}


def issues(text: str, facts: Any = None) -> list[str]:
    with pytest.raises(PlanError) as error:
        parse_plan(text, "p.yaml", facts=facts)
    return [str(issue) for issue in error.value.issues]


# --- exact expansions ---------------------------------------------------------------------


def test_alter_column_in_place() -> None:
    plan = """\
version: 1
name: tidy
changes:
  - alter_column:
      table: orders
      column: note
      name: remark
      nullable: false
      default: "''"
      comment: what the customer wrote
      unique: {name: orders_remark_key}
      check: {name: remark_short, constraint: "length(remark) < 100"}
      references: {name: orders_remark_fk, table: remarks, column: body, on_delete: cascade}
"""
    assert expanded(plan) == {
        "additive": [
            {
                "set_comment": {
                    "table": "orders",
                    "column": "note",
                    "comment": "what the customer wrote",
                }
            },
            {"set_default": {"table": "orders", "column": "note", "default": "''"}},
        ],
        "dual_read": [
            {
                "expose": {
                    "schema": "zdm_tidy",
                    "tables": [{"table": "orders", "rename": {"note": "remark"}}],
                }
            }
        ],
        "cleanup": [
            {"set_not_null": {"table": "orders", "column": "note"}},
            {"rename_column": {"table": "orders", "column": "note", "to": "remark"}},
            {"add_unique": {"table": "orders", "name": "orders_remark_key", "columns": ["remark"]}},
            {
                "add_check": {
                    "table": "orders",
                    "name": "remark_short",
                    "check": "length(remark) < 100",
                }
            },
            {
                "add_foreign_key": {
                    "table": "orders",
                    "name": "orders_remark_fk",
                    "columns": ["remark"],
                    "references": {"table": "remarks", "columns": ["body"]},
                    "on_delete": "cascade",
                }
            },
            {"unexpose": {"schema": "zdm_tidy"}},
        ],
    }


def test_alter_column_drops_default_and_not_null_in_cleanup() -> None:
    plan = """\
version: 1
changes:
  - alter_column: {table: orders, column: note, nullable: true, default: null, comment: null}
"""
    assert expanded(plan) == {
        "additive": [{"set_comment": {"table": "orders", "column": "note", "comment": None}}],
        "cleanup": [
            {"drop_default": {"table": "orders", "column": "note"}},
            {"drop_not_null": {"table": "orders", "column": "note"}},
        ],
    }


PRICE_FACTS = ColumnFacts(
    type="text",
    not_null=True,
    default="'0'::text",
    comment="list price",
    indexes=(IndexFact("orders_price_idx", ("price",), False, "btree"),),
    uniques=(("orders_sku_price_key", ("sku", "price")),),
    foreign_keys=(
        ForeignKeyFact("orders_price_fk", ("price",), "public.prices", ("label",), "cascade"),
    ),
)

PRICE_PLAN = """\
version: 1
name: price
changes:
  - alter_column:
      table: orders
      column: price
      type: numeric(10,2)
      up: "nullif(price, '')::numeric(10,2)"
      down: "price::text"
      default: "0"
"""


def test_alter_column_type_through_a_copy() -> None:
    facts = {("public", "orders", "price"): PRICE_FACTS}
    reverse = '(SELECT (price::text) FROM (SELECT "_zdm_new_price" AS "price") AS zdm_new)'
    up = "nullif(price, '')::numeric(10,2)"
    assert (
        expanded(PRICE_PLAN, facts)
        == {
            "additive": [
                {
                    "add_column": {
                        "table": "orders",
                        "column": {"name": "_zdm_new_price", "type": "numeric(10,2)"},
                    }
                },
                {
                    "set_comment": {
                        "table": "orders",
                        "column": "_zdm_new_price",
                        "comment": "list price",
                    }
                },
            ],
            "dual_write": [
                {
                    "dual_write": {
                        "table": "orders",
                        "set": {"_zdm_new_price": up},
                        "reverse": {"price": reverse},
                        "name": "zdm_dw_orders_price",
                    }
                }
            ],
            "backfill": [{"backfill": {"table": "orders", "set": {"_zdm_new_price": up}}}],
            "dual_read": [
                {
                    "create_index": {
                        "table": "orders",
                        "name": "_zdm_new_orders_price_idx",
                        "columns": ["_zdm_new_price"],
                    }
                },
                {
                    "add_unique": {
                        "table": "orders",
                        "name": "_zdm_new_orders_sku_price_key",
                        "columns": ["sku", "_zdm_new_price"],
                    }
                },
                {
                    "add_foreign_key": {
                        "table": "orders",
                        "name": "_zdm_new_orders_price_fk",
                        "columns": ["_zdm_new_price"],
                        "references": {"table": "public.prices", "columns": ["label"]},
                        "on_delete": "cascade",
                    }
                },
                {
                    "expose": {
                        "schema": "zdm_price",
                        "tables": [
                            {
                                "table": "orders",
                                "hide": ["price"],
                                "rename": {"_zdm_new_price": "price"},
                            }
                        ],
                    }
                },
            ],
            "cleanup": [
                {"set_not_null": {"table": "orders", "column": "_zdm_new_price"}},
                {
                    "sql": {
                        "up": 'DROP TRIGGER "zdm_dw_orders_price" ON "public"."orders";\n'
                        'DROP FUNCTION "public"."zdm_dw_orders_price"();\n'
                        'ALTER TABLE "public"."orders" DROP COLUMN "price";\n'
                        'ALTER TABLE "public"."orders" RENAME COLUMN "_zdm_new_price" TO "price";\n'
                        'ALTER INDEX "public"."_zdm_new_orders_price_idx" RENAME TO "orders_price_idx";\n'
                        'ALTER TABLE "public"."orders" RENAME CONSTRAINT "_zdm_new_orders_sku_price_key" '
                        'TO "orders_sku_price_key";\n'
                        'ALTER TABLE "public"."orders" RENAME CONSTRAINT "_zdm_new_orders_price_fk" '
                        'TO "orders_price_fk";\n'
                        # PostgreSQL 18's not-null constraint of the copy gets the name it would
                        # have given the column's own, so a later copy finds its name free.
                        + _rename_not_null('"public"."orders"', "price", "orders_price_not_null")
                        + ";\n"
                        'ALTER TABLE "public"."orders" ALTER COLUMN "price" SET DEFAULT 0;\n',
                        "lock": "ACCESS EXCLUSIVE",
                        "tables": ["orders"],
                    }
                },
                {"unexpose": {"schema": "zdm_price"}},
            ],
        }
    )


def test_a_type_change_without_a_rewrite_is_made_in_place() -> None:
    plan = """\
version: 1
changes:
  - alter_column: {table: users, column: email, type: text, comment: address}
  - alter_column: {table: users, column: name, type: varchar(200)}
"""
    facts = {
        ("public", "users", "email"): ColumnFacts("character varying(255)", True, None, None),
        ("public", "users", "name"): ColumnFacts("character varying(100)", True, None, None),
    }
    assert expanded(plan, facts) == {
        "additive": [
            {"set_type": {"table": "users", "column": "email", "type": "text"}},
            {"set_comment": {"table": "users", "column": "email", "comment": "address"}},
            {"set_type": {"table": "users", "column": "name", "type": "varchar(200)"}},
        ]
    }
    # After the change (a resume, a rollback) the plan expands the same.
    done = {
        ("public", "users", "email"): ColumnFacts("text", True, None, None),
        ("public", "users", "name"): ColumnFacts("character varying(200)", True, None, None),
    }
    assert expanded(plan, done) == expanded(plan, facts)
    # Narrowing rewrites (and may fail): a copy, which needs `down`.
    narrow = (
        "version: 1\nchanges:\n  - alter_column: {table: users, column: name, type: varchar(50)}\n"
    )
    assert issues(narrow, lambda s, t, c: facts[(s, t, c)]) == [
        "p.yaml:3:54: changes[0].alter_column.type: changing the type of 'name' to varchar(50) "
        "rewrites the table, so it goes through a copy column, which needs 'down': the old "
        "column's value (new -> old) for rows the new version writes, e.g. the new value cast "
        "back to the old type"
    ]


def test_an_up_that_computes_new_values_is_never_dropped_by_an_in_place_change() -> None:
    """A widening is made in place only when `up` leaves every value as it is (the column, or
    its cast to the new type); otherwise the values change, which only a copy column does."""
    facts = {("public", "users", "email"): ColumnFacts("character varying(255)", True, None, None)}

    def plan(up: str, more: str = ", type: text") -> str:
        return (
            "version: 1\nchanges:\n  - alter_column: {table: users, column: email"
            f"{more}, up: {up!r}, down: 'email'}}\n"
        )

    def kinds(text: str) -> list[str]:
        return [next(iter(s)) for steps in expanded(text, facts).values() for s in steps]

    for same in ("email", '"email"', "CAST(email AS text)", "email::TEXT", "(email)"):
        text = plan(same).replace(", down: 'email'", "")
        assert kinds(text) == ["set_type"], same
    for computes in ("lower(email)", "CAST(trim(email) AS text)", "email || ''"):
        found = kinds(plan(computes))
        assert "backfill" in found and "set_type" not in found, (computes, found)
        (backfill,) = expanded(plan(computes), facts)["backfill"]
        assert backfill["backfill"]["set"] == {"_zdm_new_email": computes}
    # No type: a default with an `up` that computes new values goes through the copy too
    found = kinds(plan("lower(email)", more=", default: \"'x'\"").replace(", down: 'email'", ""))
    assert "backfill" in found, found
    # A computing `up` without `down` says which field makes it a copy
    assert issues(
        plan("lower(email)").replace(", down: 'email'", ""), lambda s, t, c: facts[(s, t, c)]
    ) == [
        "p.yaml:3:65: changes[0].alter_column.up: 'up' computes new values of 'email', so it goes"
        " through a copy column, which needs 'down': the old column's value (new -> old) for"
        " rows the new version writes, e.g. the new value cast back to the old type"
    ]


def test_a_copy_without_a_database_is_refused_naming_what_it_cannot_know() -> None:
    assert issues(PRICE_PLAN) == [
        "p.yaml:6:15: changes[0].alter_column.column: changing column 'price' of orders needs "
        "the live catalog (whether its type changes without a rewrite; the default, NOT NULL, "
        "indexes, constraints and comment a copy must carry over): give a connection (--dsn, "
        "ZDM_DSN)"
    ]


def test_a_copy_refuses_what_it_cannot_carry_over() -> None:
    facts = ColumnFacts(
        type="text",
        not_null=False,
        default=None,
        comment=None,
        checks=("price_positive",),
        refusals=("view public.cheap reads it",),
    )
    assert issues(PRICE_PLAN, lambda s, t, c: facts) == [
        "p.yaml:6:15: changes[0].alter_column.column: column 'price' of orders cannot be "
        "copied: view public.cheap reads it; check constraint price_positive uses it (drop it "
        "first and restate it as this change's 'check')"
    ]
    assert issues(PRICE_PLAN, lambda s, t, c: None) == [
        "p.yaml:6:15: changes[0].alter_column.column: table public.orders has no column 'price'"
    ]


def test_the_simpler_kinds() -> None:
    plan = """\
version: 1
name: v2
version_schema: app_v2
changes:
  - rename_table: {from: customers, to: clients}
  - rename_column: {table: orders, from: qty, to: quantity}
  - drop_column: {table: orders, column: legacy, down: "'x'"}
  - add_column:
      table: orders
      column: {name: total, type: bigint, nullable: false, default: "0", comment: sum, unique: true, check: total >= 0}
      up: qty * 10
phases:
  dual_read:
    - verify: {sql: SELECT 1, expect: 1}
"""
    assert expanded(plan) == {
        "additive": [
            {"add_column": {"table": "orders", "column": {"name": "total", "type": "bigint"}}},
            {"set_comment": {"table": "orders", "column": "total", "comment": "sum"}},
        ],
        "dual_write": [
            {
                "dual_write": {
                    "table": "orders",
                    "reverse": {"legacy": "COALESCE(\"legacy\", 'x')"},
                    "name": "zdm_dw_orders_legacy",
                }
            },
            {
                "dual_write": {
                    "table": "orders",
                    "set": {"total": "qty * 10"},
                    "name": "zdm_dw_orders_total",
                }
            },
        ],
        "backfill": [{"backfill": {"table": "orders", "set": {"total": "qty * 10"}}}],
        "dual_read": [
            {
                "expose": {
                    "schema": "app_v2",
                    "tables": [
                        {"table": "customers", "view": "clients"},
                        {"table": "orders", "hide": ["legacy"], "rename": {"qty": "quantity"}},
                    ],
                }
            },
            {"verify": {"sql": "SELECT 1", "expect": 1}},
        ],
        "cleanup": [
            {"rename_table": {"table": "customers", "to": "clients"}},
            {"rename_column": {"table": "orders", "column": "qty", "to": "quantity"}},
            # drop_column drops the trigger that reads the column, in its own transaction.
            {"drop_column": {"table": "orders", "column": "legacy"}},
            {"set_not_null": {"table": "orders", "column": "total"}},
            {"set_default": {"table": "orders", "column": "total", "default": "0"}},
            {"drop_dual_write": {"table": "orders", "name": "zdm_dw_orders_total"}},
            {"add_unique": {"table": "orders", "name": "orders_total_key", "columns": ["total"]}},
            {"add_check": {"table": "orders", "name": "orders_total_check", "check": "total >= 0"}},
            {"unexpose": {"schema": "app_v2"}},
        ],
    }


def test_constraint_comment_identity_and_key_changes() -> None:
    plan = """\
version: 1
changes:
  - drop_constraint: {table: orders, name: qty_positive}
  - rename_constraint: {table: orders, from: a_key, to: b_key}
  - set_comment: {table: orders, comment: the orders}
  - set_replica_identity: {table: orders, identity: {type: index, index: orders_code_key}}
  - add_primary_key: {table: events, columns: [source, seq]}
"""
    assert expanded(plan) == {
        "additive": [
            {"set_comment": {"table": "orders", "comment": "the orders"}},
            {
                "set_replica_identity": {
                    "table": "orders",
                    "type": "index",
                    "index": "orders_code_key",
                }
            },
        ],
        "cleanup": [
            {"drop_constraint": {"table": "orders", "name": "qty_positive"}},
            {"rename_constraint": {"table": "orders", "name": "a_key", "to": "b_key"}},
            {"set_not_null": {"table": "events", "column": "source"}},
            {"set_not_null": {"table": "events", "column": "seq"}},
            {
                "add_primary_key": {
                    "table": "events",
                    "name": "events_pkey",
                    "columns": ["source", "seq"],
                }
            },
        ],
    }


def test_drop_constraint_with_up_and_down_goes_through_a_copy() -> None:
    plan = """\
version: 1
name: loose
changes:
  - drop_constraint:
      table: orders
      name: qty_positive
      column: qty
      up: qty
      down: "greatest(qty, 1)"
"""
    facts = ColumnFacts(
        type="integer", not_null=True, default=None, comment=None, checks=("qty_positive",)
    )
    result = expanded(plan, {("public", "orders", "qty"): facts})
    assert result["additive"] == [
        {"add_column": {"table": "orders", "column": {"name": "_zdm_new_qty", "type": "integer"}}}
    ]
    assert result["dual_write"][0]["dual_write"]["reverse"] == {
        "qty": '(SELECT (greatest(qty, 1)) FROM (SELECT "_zdm_new_qty" AS "qty") AS zdm_new)'
    }
    assert [next(iter(step)) for step in result["cleanup"]] == ["set_not_null", "sql", "unexpose"]
    # Another check on the column is still refused: its text names the old column.
    other = ColumnFacts(
        type="integer", not_null=True, default=None, comment=None, checks=("qty_small",)
    )
    assert "check constraint qty_small uses it" in issues(plan, lambda s, t, c: other)[0]


def test_change_errors_are_located() -> None:
    plan = """\
version: 1
changes:
  - alter_column: {table: orders, column: price}
  - alter_column: {table: orders, column: price, type: bigint}
  - alter_colum: {table: orders}
  - rename_column: {table: orders, from: a, too: b}
"""
    assert issues(plan) == [
        "p.yaml:3:19: changes[0].alter_column: alter_column changes nothing; give at least one "
        "of name, type, nullable, default, unique, check, references, comment",
        "p.yaml:5:5: changes[2]: unknown change kind 'alter_colum' (did you mean "
        "'alter_column'?); known kinds: alter_column, add_column, drop_column, rename_column, "
        "rename_table, drop_constraint, rename_constraint, set_comment, set_replica_identity, "
        "add_primary_key",
        "p.yaml:6:20: changes[3].rename_column.to: missing required field 'to'",
        "p.yaml:6:45: changes[3].rename_column.too: unknown key 'too' (did you mean 'to'?); "
        "expected one of: table, from, to",
    ]


def test_the_json_schema_knows_changes() -> None:
    schema = plan_json_schema()
    change = schema["properties"]["changes"]["items"]
    kinds = {next(iter(choice["properties"])) for choice in _choices(change, schema)}
    assert kinds == {
        "alter_column",
        "add_column",
        "drop_column",
        "rename_column",
        "rename_table",
        "drop_constraint",
        "rename_constraint",
        "set_comment",
        "set_replica_identity",
        "add_primary_key",
    }


def _choices(items: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return schema["$defs"][ref.rsplit("/", 1)[1]] if ref else node

    items = resolve(items)
    return [resolve(choice) for choice in items.get("oneOf", items.get("anyOf", []))]


def test_zdm_expand_prints_a_plan_that_validates_again(tmp_path: Path) -> None:
    path = tmp_path / "rename.yaml"
    path.write_text("version: 1\nchanges:\n  - rename_column: {table: t, from: a, to: b}\n")
    result = CliRunner().invoke(app, ["expand", str(path)])
    assert result.exit_code == 0, result.output
    again = parse_plan(result.stdout, "again.yaml")
    assert not again.plan.changes
    assert [step.kind for step in again.steps()] == ["expose", "rename_column", "unexpose"]
    assert yaml.safe_load(result.stdout)["name"] == "rename"


# --- lifecycles on PostgreSQL -------------------------------------------------------------


@dataclass
class Version:
    """One application version writing on its own connection until stopped: inserts, then
    updates of the rows it inserted, through `search_path` (the base tables or the views)."""

    dsn: str
    search_path: str
    insert: str
    update: str
    errors: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Version:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _loop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"SET search_path = {self.search_path}")
            n = 0
            while not self._stop.is_set() or n < 4:
                n += 1
                try:
                    if n % 2 or not self.ids:
                        row = conn.execute(self.insert, {"n": n}).fetchone()
                        assert row is not None
                        self.ids.append(row[0])
                    else:
                        conn.execute(self.update, {"n": n, "id": self.ids[n % len(self.ids)]})
                except psycopg.Error as error:
                    self.errors.append(f"{type(error).__name__}: {error}")
                self._stop.wait(0.005)


def catalog(conn: Conn) -> dict[str, Any]:
    """The public schema's catalog, without row checksums (the versions keep writing)."""
    snap = snapshot(conn)
    snap.pop("data", None)
    return snap


@dataclass(frozen=True)
class Lifecycle:
    id: str
    setup: str
    plan: str
    old: tuple[str, str]
    """(insert, update) of the old version, on the base tables."""
    new: tuple[str, str]
    """(insert, update) of the new version, through the version views."""
    agree: str
    """A count of rows whose two shapes disagree while both exist: must be 0 at the gate."""
    done: Callable[[Conn], None]
    """Checks of the final schema and data."""


def _column(conn: Conn, table: str, name: str) -> tuple[str, bool, str | None, str | None] | None:
    row = conn.execute(
        "SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull,"
        " pg_get_expr(d.adbin, d.adrelid), col_description(a.attrelid, a.attnum)"
        " FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid"
        " AND d.adnum = a.attnum WHERE a.attrelid = %s::regclass AND a.attname = %s"
        " AND NOT a.attisdropped",
        (table, name),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3])


def _names(conn: Conn, query: str) -> list[str]:
    return [r[0] for r in conn.execute(query)]


def _no_copy_names(conn: Conn) -> None:
    """Nothing the copy was given keeps its temporary name after the swap."""
    left = _names(
        conn,
        "SELECT conname FROM pg_constraint WHERE conname LIKE '%zdm_new%'"
        " UNION ALL SELECT relname FROM pg_class WHERE relname LIKE '%zdm_new%'"
        " UNION ALL SELECT attrelid::regclass::text || '.' || attname FROM pg_attribute"
        " JOIN pg_class ON pg_class.oid = attrelid"
        # An index's own attribute names stay those of its build; indexdefs show the table's.
        " WHERE attname LIKE '%zdm_new%' AND relkind <> 'i'",
    )
    assert left == []


def _price_done(conn: Conn) -> None:
    _no_copy_names(conn)
    assert _column(conn, "orders", "price") == ("numeric(10,2)", True, "0", "list price")
    assert _column(conn, "orders", "_zdm_new_price") is None
    assert _names(
        conn, "SELECT indexname FROM pg_indexes WHERE tablename = 'orders' ORDER BY 1"
    ) == ["orders_pkey", "orders_price_idx", "orders_sku_price_key"]
    assert _names(
        conn,
        "SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'orders'::regclass AND contype <> 'n' ORDER BY 1",
    ) == [
        "orders_pkey PRIMARY KEY (id)",
        "orders_sku_price_key UNIQUE (sku, price)",
        "price_positive CHECK ((price >= (0)::numeric))",
    ]
    assert conn.execute("SELECT count(*) FROM orders WHERE price IS NULL").fetchone() == (0,)
    assert conn.execute("SELECT price FROM orders WHERE id = 1").fetchone() == (pytest.approx(1.5),)
    assert not _names(conn, "SELECT nspname FROM pg_namespace WHERE nspname = 'zdm_price'")


def _remark_done(conn: Conn) -> None:
    assert _column(conn, "people", "remark") == ("text", True, "'none'::text", "what they said")
    assert _column(conn, "people", "note") is None
    assert _names(
        conn,
        "SELECT conname FROM pg_constraint WHERE conrelid = 'people'::regclass"
        " AND contype IN ('u', 'c') ORDER BY 1",
    ) == ["people_remark_key", "remark_short"]


def _renamed_column_done(conn: Conn) -> None:
    assert _column(conn, "people", "nick") == ("text", False, None, None)
    assert _column(conn, "people", "note") is None


def _renamed_table_done(conn: Conn) -> None:
    assert _names(
        conn, "SELECT relname FROM pg_class WHERE relname IN ('customers', 'clients')"
    ) == ["clients"]


def _dropped_done(conn: Conn) -> None:
    assert _column(conn, "people", "legacy") is None
    assert (
        _names(
            conn,
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'people'::regclass AND NOT tgisinternal",
        )
        == []
    )


def _added_done(conn: Conn) -> None:
    assert _column(conn, "people", "full_name") == ("text", True, "''::text", "shown name")
    assert conn.execute(
        "SELECT count(*) FROM people WHERE full_name IS DISTINCT FROM first || ' ' || last"
    ).fetchone() == (0,)


def _loosened_done(conn: Conn) -> None:
    _no_copy_names(conn)
    assert _column(conn, "stock", "qty") == ("integer", True, None, None)
    assert _names(
        conn,
        "SELECT conname FROM pg_constraint WHERE conrelid = 'stock'::regclass"
        " AND contype <> 'n' ORDER BY 1",
    ) == ["stock_pkey"]
    assert conn.execute("SELECT count(*) FROM stock WHERE qty = 0").fetchone() != (0,)


def _keyed_done(conn: Conn) -> None:
    assert _names(
        conn,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'events'::regclass"
        " AND contype = 'p'",
    ) == ["PRIMARY KEY (source, seq)"]
    assert _column(conn, "events", "source") == ("text", True, None, None)


def _described_done(conn: Conn) -> None:
    row = conn.execute(
        "SELECT obj_description('tags'::regclass), relreplident::text,"
        " (SELECT conname FROM pg_constraint WHERE conrelid = 'tags'::regclass AND contype = 'u')"
        " FROM pg_class WHERE oid = 'tags'::regclass"
    ).fetchone()
    assert row == ("labels", "i", "tags_label_unique")


def _odd_done(conn: Conn) -> None:
    _no_copy_names(conn)
    assert _column(conn, '"Shop Items"', "Price") == ("numeric(8,2)", True, None, None)
    assert _names(
        conn, "SELECT indexdef FROM pg_indexes WHERE indexname = 'Shop \"Price\" idx'"
    ) == ['CREATE INDEX "Shop ""Price"" idx" ON public."Shop Items" USING btree ("Price")']


PEOPLE = """
CREATE TABLE people (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, first text NOT NULL,
                     last text NOT NULL, note text, legacy text NOT NULL);
INSERT INTO people (first, last, note, legacy)
SELECT 'f' || i, 'l' || i, 'note ' || i, 'legacy ' || i FROM generate_series(1, 200) i;
"""


LIFECYCLES = [
    Lifecycle(
        "alter_column_type",
        setup="""
CREATE TABLE orders (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, sku text NOT NULL,
                     price text NOT NULL);
COMMENT ON COLUMN orders.price IS 'list price';
CREATE INDEX orders_price_idx ON orders (price);
ALTER TABLE orders ADD CONSTRAINT orders_sku_price_key UNIQUE (sku, price);
INSERT INTO orders (sku, price) SELECT 'sku' || i, (i * 1.5)::text FROM generate_series(1, 300) i;
""",
        plan="""\
version: 1
name: price
gates: [cleanup]
changes:
  - alter_column:
      table: orders
      column: price
      type: numeric(10,2)
      up: "price::numeric(10,2)"
      down: "price::text"
      default: "0"
      check: {name: price_positive, constraint: "price >= 0"}
""",
        old=(
            "INSERT INTO orders (sku, price) VALUES ('old' || txid_current(), (%(n)s * 0.25)::text) RETURNING id",
            "UPDATE orders SET price = (%(n)s * 0.5)::text WHERE id = %(id)s",
        ),
        new=(
            "INSERT INTO orders (sku, price) VALUES ('new' || txid_current(), %(n)s * 0.75) RETURNING id",
            "UPDATE orders SET price = %(n)s * 0.125 WHERE id = %(id)s",
        ),
        agree="SELECT count(*) FROM public.orders"
        " WHERE _zdm_new_price IS DISTINCT FROM price::numeric(10,2)"
        " OR price IS DISTINCT FROM _zdm_new_price::text AND price::numeric <> _zdm_new_price",
        done=_price_done,
    ),
    Lifecycle(
        "alter_column_in_place",
        setup=PEOPLE,
        plan="""\
version: 1
name: remark
gates: [cleanup]
changes:
  - alter_column:
      table: people
      column: note
      name: remark
      nullable: false
      default: "'none'"
      comment: what they said
      unique: {name: people_remark_key}
      check: {name: remark_short, constraint: "length(remark) < 100"}
""",
        old=(
            "INSERT INTO people (first, last, note, legacy) VALUES ('o', 'o', 'old' ||"
            " txid_current(), 'l') RETURNING id",
            "UPDATE people SET note = 'old upd ' || txid_current() WHERE id = %(id)s",
        ),
        new=(
            "INSERT INTO people (first, last, remark, legacy) VALUES ('n', 'n', 'new' ||"
            " txid_current(), 'l') RETURNING id",
            "UPDATE people SET remark = 'new upd ' || txid_current() WHERE id = %(id)s",
        ),
        agree="SELECT count(*) FROM public.people WHERE note IS NULL",
        done=_remark_done,
    ),
    Lifecycle(
        "rename_column",
        setup=PEOPLE,
        plan="""\
version: 1
name: nick
gates: [cleanup]
changes:
  - rename_column: {table: people, from: note, to: nick}
""",
        old=(
            "INSERT INTO people (first, last, note, legacy) VALUES ('o', 'o', 'o', 'l')"
            " RETURNING id",
            "UPDATE people SET note = 'old ' || %(n)s WHERE id = %(id)s",
        ),
        new=(
            "INSERT INTO people (first, last, nick, legacy) VALUES ('n', 'n', 'n', 'l')"
            " RETURNING id",
            "UPDATE people SET nick = 'new ' || %(n)s WHERE id = %(id)s",
        ),
        agree="SELECT 0",
        done=_renamed_column_done,
    ),
    Lifecycle(
        "rename_table",
        setup="CREATE TABLE customers (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
        " name text NOT NULL); INSERT INTO customers (name) VALUES ('a'), ('b');",
        plan="""\
version: 1
name: clients
gates: [cleanup]
changes:
  - rename_table: {from: customers, to: clients}
""",
        old=(
            "INSERT INTO customers (name) VALUES ('old') RETURNING id",
            "UPDATE customers SET name = 'old ' || %(n)s WHERE id = %(id)s",
        ),
        new=(
            "INSERT INTO clients (name) VALUES ('new') RETURNING id",
            "UPDATE clients SET name = 'new ' || %(n)s WHERE id = %(id)s",
        ),
        agree="SELECT 0",
        done=_renamed_table_done,
    ),
    Lifecycle(
        "drop_column",
        setup=PEOPLE,
        plan="""\
version: 1
name: legacy
gates: [cleanup]
changes:
  - drop_column: {table: people, column: legacy, down: "'from v2'"}
""",
        old=(
            "INSERT INTO people (first, last, legacy) VALUES ('o', 'o', 'old') RETURNING id",
            "UPDATE people SET legacy = 'old ' || %(n)s WHERE id = %(id)s",
        ),
        new=(
            "INSERT INTO people (first, last) VALUES ('n', 'n') RETURNING id",
            "UPDATE people SET first = 'new ' || %(n)s WHERE id = %(id)s",
        ),
        agree="SELECT count(*) FROM public.people WHERE legacy IS NULL"
        " OR first = 'n' AND legacy <> 'from v2' OR first = 'o' AND legacy NOT LIKE 'old%%'",
        done=_dropped_done,
    ),
    Lifecycle(
        "add_column",
        setup=PEOPLE,
        plan="""\
version: 1
name: full_name
gates: [cleanup]
changes:
  - add_column:
      table: people
      column: {name: full_name, type: text, nullable: false, default: "''", comment: shown name}
      up: "first || ' ' || last"
""",
        old=(
            "INSERT INTO people (first, last, legacy) VALUES ('o', 'o' || %(n)s, 'l') RETURNING id",
            "UPDATE people SET first = 'old ' || %(n)s WHERE id = %(id)s",
        ),
        new=(
            "INSERT INTO people (first, last, legacy, full_name) VALUES ('n', 'x', 'l', 'n x')"
            " RETURNING id",
            "UPDATE people SET first = 'new', last = 'y', full_name = 'new y' WHERE id = %(id)s",
        ),
        agree="SELECT count(*) FROM public.people WHERE full_name IS DISTINCT FROM first || ' ' || last",
        done=_added_done,
    ),
    Lifecycle(
        "drop_constraint_through_a_copy",
        setup="CREATE TABLE stock (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
        " qty integer NOT NULL CONSTRAINT qty_positive CHECK (qty > 0));"
        " INSERT INTO stock (qty) SELECT g FROM generate_series(1, 100) g;",
        plan="""\
version: 1
name: loose
gates: [cleanup]
changes:
  - drop_constraint: {table: stock, name: qty_positive, column: qty, up: qty, down: "greatest(qty, 1)"}
""",
        old=(
            "INSERT INTO stock (qty) VALUES (%(n)s) RETURNING id",
            "UPDATE stock SET qty = %(n)s WHERE id = %(id)s",
        ),
        new=(
            "INSERT INTO stock (qty) VALUES (0) RETURNING id",
            "UPDATE stock SET qty = 0 WHERE id = %(id)s",
        ),
        agree="SELECT count(*) FROM public.stock WHERE qty <> greatest(_zdm_new_qty, 1)"
        " OR _zdm_new_qty IS NULL",
        done=_loosened_done,
    ),
    Lifecycle(
        "add_primary_key",
        setup="CREATE TABLE events (source text, seq integer NOT NULL);"
        " INSERT INTO events SELECT 's' || g % 3, g FROM generate_series(1, 100) g;",
        plan="""\
version: 1
name: events_key
gates: [cleanup]
changes:
  - add_primary_key: {table: events, columns: [source, seq]}
""",
        old=(
            "INSERT INTO events VALUES ('old', txid_current()) RETURNING seq",
            "UPDATE events SET source = 'old' WHERE seq = %(id)s",
        ),
        new=(
            "INSERT INTO events VALUES ('new', txid_current()) RETURNING seq",
            "UPDATE events SET source = 'new' WHERE seq = %(id)s",
        ),
        agree="SELECT count(*) FROM public.events WHERE source IS NULL",
        done=_keyed_done,
    ),
    Lifecycle(
        "rename_constraint_set_comment_set_replica_identity",
        setup="CREATE TABLE tags (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
        " label text NOT NULL CONSTRAINT tags_label_key UNIQUE);"
        " INSERT INTO tags (label) SELECT 't' || g FROM generate_series(1, 50) g;",
        plan="""\
version: 1
name: tags
gates: [cleanup]
changes:
  - set_comment: {table: tags, comment: labels}
  - set_replica_identity: {table: tags, identity: {type: index, index: tags_label_key}}
  - rename_constraint: {table: tags, from: tags_label_key, to: tags_label_unique}
""",
        old=(
            "INSERT INTO tags (label) VALUES ('old' || txid_current()) RETURNING id",
            "UPDATE tags SET label = 'old upd ' || txid_current() WHERE id = %(id)s",
        ),
        new=(
            "INSERT INTO tags (label) VALUES ('new' || txid_current()) RETURNING id",
            "UPDATE tags SET label = 'new upd ' || txid_current() WHERE id = %(id)s",
        ),
        agree="SELECT 0",
        done=_described_done,
    ),
    Lifecycle(
        "alter_column_quoted_names",
        setup='CREATE TABLE "Shop Items" (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,'
        ' "Price" text NOT NULL); CREATE INDEX "Shop ""Price"" idx" ON "Shop Items" ("Price");'
        ' INSERT INTO "Shop Items" ("Price") SELECT (g * 0.5)::text FROM generate_series(1, 100) g;',
        plan="""\
version: 1
name: Odd Plan
gates: [cleanup]
changes:
  - alter_column:
      table: Shop Items
      column: Price
      type: numeric(8,2)
      up: '"Price"::numeric(8,2)'
      down: '"Price"::text'
""",
        old=(
            'INSERT INTO "Shop Items" ("Price") VALUES (\'1.25\') RETURNING id',
            'UPDATE "Shop Items" SET "Price" = \'2.5\' WHERE id = %(id)s',
        ),
        new=(
            'INSERT INTO "Shop Items" ("Price") VALUES (3.75) RETURNING id',
            'UPDATE "Shop Items" SET "Price" = 4.5 WHERE id = %(id)s',
        ),
        agree='SELECT count(*) FROM public."Shop Items"'
        ' WHERE "_zdm_new_Price" IS DISTINCT FROM "Price"::numeric(8,2)',
        done=_odd_done,
    ),
]


def _run(path: Path, dsn: str, *extra: str) -> None:
    result = CliRunner().invoke(app, ["run", str(path), "--dsn", dsn, *extra])
    assert result.exit_code == 0, result.output


def _write_both(dsn: str, case: Lifecycle, schema: str) -> None:
    old = Version(dsn, "public", *case.old)
    new = Version(dsn, f"{schema}, public", *case.new)
    with old, new:
        threading.Event().wait(0.3)
    assert old.errors == [] and new.errors == []
    assert old.ids and new.ids


@pytest.mark.parametrize("case", LIFECYCLES, ids=[c.id for c in LIFECYCLES])
def test_lifecycle(case: Lifecycle, dsn: str, conn: Conn, tmp_path: Path) -> None:
    conn.execute(case.setup)
    path = tmp_path / "plan.yaml"
    path.write_text(case.plan)
    schema = default_version_schema(yaml.safe_load(case.plan)["name"])
    before = catalog(conn)

    old = Version(dsn, "public", *case.old)
    with old:
        _run(path, dsn)  # to the gate before cleanup
    assert old.errors == []
    _write_both(dsn, case, schema)
    assert conn.execute(case.agree).fetchone() == (0,)

    result = CliRunner().invoke(app, ["rollback", str(path), "--dsn", dsn])
    assert result.exit_code == 0, result.output
    assert catalog(conn) == before

    with Version(dsn, "public", *case.old) as again:
        _run(path, dsn)
    assert again.errors == []
    _write_both(dsn, case, schema)
    assert conn.execute(case.agree).fetchone() == (0,)
    _run(path, dsn, "--continue")
    case.done(conn)


def test_facts_of_a_live_column(conn: Conn, server_version: int) -> None:
    conn.execute("""
CREATE TABLE prices (label text PRIMARY KEY);
CREATE TABLE "Odd" (id int PRIMARY KEY, "Price" text NOT NULL DEFAULT 'x'
    REFERENCES prices ON DELETE SET NULL, sku text);
COMMENT ON COLUMN "Odd"."Price" IS 'p';
CREATE INDEX odd_plain ON "Odd" ("Price", sku);
CREATE INDEX odd_lower ON "Odd" (lower("Price"));
ALTER TABLE "Odd" ADD CONSTRAINT odd_u UNIQUE ("Price");
ALTER TABLE "Odd" ADD CONSTRAINT odd_c CHECK ("Price" <> '');
CREATE VIEW odd_view AS SELECT "Price" FROM "Odd";
""")
    facts = read_column_facts(conn, "public", "Odd", "Price")
    assert facts == ColumnFacts(
        type="text",
        not_null=True,
        default="'x'::text",
        comment="p",
        not_null_name="Odd_Price_not_null" if server_version >= 180000 else None,
        indexes=(IndexFact("odd_plain", ("Price", "sku"), False, "btree"),),
        uniques=(("odd_u", ("Price",)),),
        foreign_keys=(
            ForeignKeyFact("Odd_Price_fkey", ("Price",), "public.prices", ("label",), "set null"),
        ),
        checks=("odd_c",),
        refusals=(
            "index odd_lower is not a plain list of columns (an expression, a predicate, "
            "included columns, an operator class, a collation or a sort order)",
            "view odd_view reads it",
        ),
    )
    assert read_column_facts(conn, "public", "Odd", "nope") is None
    assert read_column_facts(conn, "public", "Odd", "id") is not None
    pk = read_column_facts(conn, "public", "Odd", "id")
    assert pk is not None and pk.refusals == () and pk.primary_key == ("Odd_pkey", ("id",))


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "changes" / "price.yaml"


def test_the_readme_plan_runs_as_the_readme_says(dsn: str, conn: Conn) -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"```yaml\n{EXAMPLE.read_text()}```" in readme
    assert 'psql "$ZDM_DSN" -f examples/changes/orders.sql' in readme
    conn.execute((EXAMPLE.parent / "orders.sql").read_text())
    result = CliRunner().invoke(app, ["expand", str(EXAMPLE), "--dsn", dsn])
    assert result.exit_code == 0, result.output
    assert parse_plan(result.stdout, "expanded.yaml").plan.gates == ["cleanup"]
    _run(EXAMPLE, dsn)
    with psycopg.connect(dsn, autocommit=True) as new:
        new.execute("SET search_path = zdm_price, public")
        new.execute("INSERT INTO orders (price, remark) VALUES (2.5, 'new')")
    _run(EXAMPLE, dsn, "--continue")
    assert _column(conn, "orders", "price") == ("numeric(10,2)", True, "0", "list price in euros")
    assert conn.execute("SELECT price, remark FROM orders WHERE remark = 'new'").fetchone() == (
        pytest.approx(2.5),
        "new",
    )


# --- the integer -> bigint primary key swap -------------------------------------------------

ACCOUNTS = """
CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                     account_id integer NOT NULL REFERENCES accounts ON DELETE CASCADE, n int);
CREATE TABLE notes (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    account_id integer REFERENCES accounts (id), body text);
INSERT INTO accounts (name) SELECT 'a' || g FROM generate_series(1, 2000) g;
INSERT INTO orders (account_id, n) SELECT g % 2000 + 1, g FROM generate_series(1, 4000) g;
INSERT INTO notes (account_id, body) SELECT g % 2000 + 1, 'b' FROM generate_series(1, 1000) g;
"""

BIGINT_PLAN = """\
version: 1
name: bigint_ids
gates: [cleanup]
changes:
  - alter_column: {table: accounts, column: id, type: bigint}
  - alter_column: {table: notes, column: id, type: bigint}
"""


def test_bigint_swap_expansion() -> None:
    facts = {
        ("public", "accounts", "id"): ColumnFacts(
            "integer",
            True,
            "nextval('accounts_id_seq'::regclass)",
            None,
            primary_key=("accounts_pkey", ("id",)),
            referenced_by=(
                ReferenceFact(
                    "orders_account_id_fkey", "public.orders", ("account_id",), "cascade"
                ),
            ),
            sequence="public.accounts_id_seq",
        ),
        ("public", "notes", "id"): ColumnFacts(
            "integer",
            True,
            None,
            None,
            primary_key=("notes_pkey", ("id",)),
            sequence="public.notes_id_seq",
            identity="a",
        ),
    }
    result = expanded(BIGINT_PLAN, facts)
    assert result["dual_read"][:2] == [
        {
            "create_index": {
                "table": "accounts",
                "name": "_zdm_new_accounts_pkey",
                "columns": ["_zdm_new_id"],
                "unique": True,
            }
        },
        {
            "add_foreign_key": {
                "table": "public.orders",
                "name": "_zdm_new_orders_account_id_fkey",
                "columns": ["account_id"],
                "references": {"table": "accounts", "columns": ["_zdm_new_id"]},
                "on_delete": "cascade",
            }
        },
    ]
    assert result["cleanup"][:2] == [
        {"set_not_null": {"table": "accounts", "column": "_zdm_new_id"}},
        {
            "sql": {
                # The referencing tables first, as the application's writes lock them.
                "up": 'LOCK TABLE "public"."orders", "public"."accounts" IN ACCESS EXCLUSIVE MODE;\n'
                'DROP TRIGGER "zdm_dw_accounts_id" ON "public"."accounts";\n'
                'DROP FUNCTION "public"."zdm_dw_accounts_id"();\n'
                'ALTER SEQUENCE "public"."accounts_id_seq" OWNED BY NONE;\n'
                'ALTER TABLE "public"."orders" DROP CONSTRAINT "orders_account_id_fkey";\n'
                'ALTER TABLE "public"."accounts" DROP CONSTRAINT "accounts_pkey";\n'
                'ALTER TABLE "public"."accounts" DROP COLUMN "id";\n'
                'ALTER TABLE "public"."accounts" RENAME COLUMN "_zdm_new_id" TO "id";\n'
                'ALTER TABLE "public"."accounts" ADD CONSTRAINT "accounts_pkey" PRIMARY KEY'
                ' USING INDEX "_zdm_new_accounts_pkey";\n'
                'ALTER TABLE "public"."orders" RENAME CONSTRAINT'
                ' "_zdm_new_orders_account_id_fkey" TO "orders_account_id_fkey";\n'
                'ALTER SEQUENCE "public"."accounts_id_seq" AS bigint;\n'
                'ALTER TABLE "public"."accounts" ALTER COLUMN "id" SET DEFAULT'
                ' nextval(\'"public"."accounts_id_seq"\'::regclass);\n'
                'ALTER SEQUENCE "public"."accounts_id_seq" OWNED BY "public"."accounts"."id";\n',
                "lock": "ACCESS EXCLUSIVE",
                "tables": ["accounts", "public.orders"],
            }
        },
    ]
    identity_swap = result["cleanup"][3]["sql"]["up"]
    assert identity_swap.startswith(
        'DROP TRIGGER "zdm_dw_notes_id" ON "public"."notes";\n'
        'DROP FUNCTION "public"."zdm_dw_notes_id"();\n'
        "SELECT set_config('zdm.key_sequence', (SELECT last_value || ',' || is_called"
        ' FROM "public"."notes_id_seq"), true);\n'
    )
    assert identity_swap.endswith(
        'ALTER TABLE "public"."notes" ALTER COLUMN "id" ADD GENERATED ALWAYS AS IDENTITY;\n'
        "SELECT setval(pg_get_serial_sequence('\"public\".\"notes\"', 'id'),"
        " split_part(current_setting('zdm.key_sequence'), ',', 1)::bigint,"
        " split_part(current_setting('zdm.key_sequence'), ',', 2)::boolean);\n"
    )
    composite = ColumnFacts("integer", True, None, None, primary_key=("k", ("id", "x")))
    assert issues(
        "version: 1\nchanges:\n  - alter_column: {table: t, column: id, type: bigint, name: key}\n",
        lambda s, t, c: composite,
    ) == [
        "p.yaml:3:48: changes[0].alter_column.type: column 'id' of t is the primary key: the "
        "primary key k has more columns than 'id'; a primary key's type change takes only "
        "'type', not name"
    ]


@dataclass
class Traffic:
    """The application on `threads` connections: reads, inserts and updates on the parent and
    both referencing tables, counting errors, until stopped."""

    dsn: str
    threads: int = 4
    errors: list[str] = field(default_factory=list)
    ops: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Traffic:
        for i in range(self.threads):
            worker = threading.Thread(target=self._loop, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(60)

    def _loop(self, seed: int) -> None:
        statements = [
            "SELECT name FROM accounts WHERE id = %(k)s",
            "INSERT INTO accounts (name) VALUES ('new') RETURNING id",
            "UPDATE accounts SET name = 'upd' WHERE id = %(k)s",
            "INSERT INTO orders (account_id, n) VALUES (%(k)s, 1)",
            # Rows locked in one order (the key's): two sessions updating one account's orders
            # by a scan each could lock them in different orders and deadlock each other
            # (seen on PG 15), zdm or not.
            "UPDATE orders SET n = n + 1 WHERE id IN"
            " (SELECT id FROM orders WHERE account_id = %(k)s ORDER BY id FOR UPDATE)",
            "INSERT INTO notes (account_id, body) VALUES (%(k)s, 'x')",
            "SELECT count(*) FROM notes n JOIN accounts a ON a.id = n.account_id WHERE a.id = %(k)s",
        ]
        n = seed
        # Unprepared statements: a statement the server has prepared fails once its result
        # type changes ("cached plan must not change result type"), whatever tool changes it.
        with psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None) as conn:
            while not self._stop.is_set():
                n += 1
                try:
                    conn.execute(statements[n % len(statements)], {"k": n % 1500 + 1})
                except psycopg.Error as error:
                    with self._lock:
                        self.errors.append(f"{type(error).__name__}: {error}")
                with self._lock:
                    self.ops += 1


def test_bigint_swap_under_traffic(dsn: str, conn: Conn, tmp_path: Path) -> None:
    conn.execute(ACCOUNTS)
    path = tmp_path / "bigint.yaml"
    path.write_text(BIGINT_PLAN)
    before = catalog(conn)
    with Traffic(dsn) as traffic:
        _run(path, dsn)
        result = CliRunner().invoke(app, ["rollback", str(path), "--dsn", dsn])
        assert result.exit_code == 0, result.output
        assert catalog(conn) == before
        _run(path, dsn)
        _run(path, dsn, "--continue")
    assert traffic.errors == []
    assert traffic.ops > 0
    for table in ("accounts", "notes"):
        assert _column(conn, table, "id") == (
            "bigint",
            True,
            "nextval('accounts_id_seq'::regclass)" if table == "accounts" else None,
            None,
        )
    assert _names(
        conn,
        "SELECT conname || ' ' || pg_get_constraintdef(oid) || ' ' || convalidated"
        " FROM pg_constraint WHERE contype IN ('p', 'f')"
        " AND connamespace = 'public'::regnamespace ORDER BY 1",
    ) == [
        "accounts_pkey PRIMARY KEY (id) true",
        "notes_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(id) true",
        "notes_pkey PRIMARY KEY (id) true",
        "orders_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(id)"
        " ON DELETE CASCADE true",
        "orders_pkey PRIMARY KEY (id) true",
    ]
    _no_copy_names(conn)
    seq = conn.execute(
        "SELECT format_type(seqtypid, NULL) FROM pg_sequence WHERE seqrelid = 'accounts_id_seq'::regclass"
    ).fetchone()
    assert seq == ("bigint",)
    # The sequences go on from where they were; the keys keep their values.
    new = conn.execute("INSERT INTO accounts (name) VALUES ('after') RETURNING id").fetchone()
    top = conn.execute("SELECT max(id) FROM accounts WHERE name <> 'after'").fetchone()
    assert new is not None and top is not None and new[0] > top[0]
    note = conn.execute("INSERT INTO notes (account_id) VALUES (1) RETURNING id").fetchone()
    assert note is not None and note[0] > 1000
    assert conn.execute(
        "SELECT count(*) FROM orders o LEFT JOIN accounts a ON a.id = o.account_id WHERE a.id IS NULL"
    ).fetchone() == (0,)


def test_a_copy_refuses_hand_written_steps_on_the_old_column() -> None:
    plan = PRICE_PLAN + (
        "phases:\n"
        "  additive:\n"
        "    - create_index: {table: orders, name: by_price, columns: [price]}\n"
        "    - create_index: {table: orders, name: by_sku, columns: [sku]}\n"
    )
    facts = ColumnFacts("text", True, None, None)
    assert issues(plan, lambda s, t, c: facts) == [
        "p.yaml:6:15: changes[0].alter_column.column: the change replaces column 'price' of "
        "orders by a copy, but phases.additive[0] create_index act on the old column, which the "
        "swap drops; make that part of this change (default, nullable, unique, check, "
        "references) or a later plan"
    ]


def test_hand_written_steps_follow_the_expanded_ones_and_keep_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(
        "version: 1\n"
        "changes:\n"
        "  - rename_column: {table: t, from: a, to: b}\n"
        "phases:\n"
        "  cleanup:\n"
        "    - drop_column: {table: t, column: c}\n"
    )
    loaded = api.load(path)
    assert [(s.key, s.kind) for s in loaded.steps()] == [
        ("dual_read[0]", "expose"),
        ("cleanup[0]", "rename_column"),
        ("cleanup[1]", "unexpose"),
        ("cleanup[2]", "drop_column"),
    ]
    assert dict(loaded.step_lines) == {
        "dual_read[0]": 3,
        "cleanup[0]": 3,
        "cleanup[1]": 3,
        "cleanup[2]": 6,
    }
    assert loaded.step_origins["cleanup[0]"] == "changes[0] rename_column"
    assert "cleanup[2]" not in loaded.step_origins
    text = api.dry_run(path, None)
    assert "-- step cleanup[0] rename_column (from changes[0] rename_column)" in text
    assert "-- step cleanup[2] drop_column\n" in text


def test_add_column_without_up_and_drop_column_without_down() -> None:
    plan = """\
version: 1
name: plain
changes:
  - add_column: {table: t, column: {name: flag, type: boolean, nullable: false, default: "false"}}
  - drop_column: {table: t, column: legacy}
"""
    assert expanded(plan) == {
        "additive": [
            {
                "add_column": {
                    "table": "t",
                    "column": {
                        "name": "flag",
                        "type": "boolean",
                        "nullable": False,
                        "default": "false",
                    },
                }
            }
        ],
        "dual_read": [
            {"expose": {"schema": "zdm_plain", "tables": [{"table": "t", "hide": ["legacy"]}]}}
        ],
        "cleanup": [
            {"drop_column": {"table": "t", "column": "legacy"}},
            {"unexpose": {"schema": "zdm_plain"}},
        ],
    }


def test_referencing_columns_follow_in_a_later_plan(dsn: str, conn: Conn, tmp_path: Path) -> None:
    """After the key swap, the referencing columns change with alter_column of their own: the
    copy carries the foreign key (validated again) and the index."""
    conn.execute(ACCOUNTS + "CREATE INDEX orders_account_idx ON orders (account_id);")
    first = tmp_path / "bigint_ids.yaml"
    first.write_text(BIGINT_PLAN.replace("gates: [cleanup]\n", ""))
    _run(first, dsn)
    second = tmp_path / "bigint_refs.yaml"
    second.write_text(
        "version: 1\n"
        "changes:\n"
        "  - alter_column: {table: orders, column: account_id, type: bigint,"
        " up: account_id, down: account_id}\n"
    )
    with Traffic(dsn) as traffic:
        _run(second, dsn)
    assert traffic.errors == []
    assert _column(conn, "orders", "account_id") == ("bigint", True, None, None)
    assert _names(
        conn,
        "SELECT conname || ' ' || pg_get_constraintdef(oid) || ' ' || convalidated"
        " FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype = 'f'",
    ) == [
        "orders_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(id)"
        " ON DELETE CASCADE true"
    ]
    assert _names(
        conn, "SELECT indexdef FROM pg_indexes WHERE indexname = 'orders_account_idx'"
    ) == ["CREATE INDEX orders_account_idx ON public.orders USING btree (account_id)"]
    _no_copy_names(conn)


def test_a_resume_refuses_an_expansion_the_live_schema_changed(
    dsn: str, conn: Conn, tmp_path: Path
) -> None:
    conn.execute(LIFECYCLES[0].setup)
    path = tmp_path / "plan.yaml"
    path.write_text(LIFECYCLES[0].plan)
    _run(path, dsn)  # to the gate
    conn.execute("CREATE INDEX orders_price_sku_idx ON orders (price, sku)")
    result = CliRunner().invoke(app, ["run", str(path), "--dsn", dsn, "--continue"])
    assert result.exit_code == 2, result.output
    assert "expand differently from when run 1 started" in result.output
    assert "  dual_read[1] create_index: was dual_read[1] add_unique\n" in result.output
    conn.execute("DROP INDEX orders_price_sku_idx")
    _run(path, dsn, "--continue")
    LIFECYCLES[0].done(conn)


def test_two_changes_of_one_column_and_a_key_swap_beside_its_referencing_table() -> None:
    plan = """\
version: 1
changes:
  - alter_column: {table: t, column: c, nullable: false}
  - rename_column: {table: t, from: c, to: d}
"""
    assert issues(plan) == [
        "p.yaml:4:20: changes[1].rename_column: column 'c' is changed by changes[0] too; give "
        "one change all it needs (alter_column takes name, type, nullable, default, "
        "constraints and comment together)"
    ]
    key = ColumnFacts(
        "integer",
        True,
        None,
        None,
        primary_key=("accounts_pkey", ("id",)),
        referenced_by=(ReferenceFact("orders_fk", "public.orders", ("account_id",), None),),
    )
    other = ColumnFacts("integer", True, None, None)
    swap_and_child = """\
version: 1
changes:
  - alter_column: {table: accounts, column: id, type: bigint}
  - alter_column: {table: orders, column: account_id, type: bigint, down: account_id}
"""
    found = issues(swap_and_child, lambda s, t, c: key if t == "accounts" else other)
    assert found == [
        "p.yaml:3:55: changes[0].alter_column.type: column 'id' of accounts is the primary "
        "key: changes[1] changes a column that references it: the key swap drops and renames "
        "that foreign key, so change the column in a later plan"
    ]
