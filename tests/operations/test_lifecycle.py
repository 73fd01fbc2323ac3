"""Every step kind's whole lifecycle against PostgreSQL, while the application keeps writing.

- Lifecycle: for each kind, a minimal plan runs forward (`api.run_plan`), its effect is read
  from the catalog and the data, `api.rollback` undoes it and the schema is exactly as before
  (catalog snapshot and a checksum of the rows), and the plan runs again as a new run.
  Irreversible kinds run forward, then rollback refuses up front (RunRefused, exit 2 in the
  CLI), names the step and undoes nothing. A writer thread inserts and updates rows of the
  table every few milliseconds throughout, and must see no error and lose no write.
- Half-finished steps: a step that fails midway (VALIDATE over a violating row, a unique build
  over duplicates, a backfill batch that raises) is rolled back to exactly the state before.
- Idempotence: the forward units are executed directly (as if zdm had crashed after the
  statements and before their bookkeeping), after each prefix of them in turn; the plan then
  runs to the end over them, the catalog probes skipping what is there, and the result is
  exactly that of a clean run. An INVALID index of the step's name, as a failed concurrent
  build leaves it, is dropped and rebuilt.
- Names that need quoting (quotes, capitals, spaces) through a whole plan and its rollback.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from ops_support import BASE_DDL, PG18, WRITER_IDS, Writer, scalar, snapshot, write_plan
from psycopg import errors, sql

from zdm import api
from zdm.ddl import Action, BackfillJob, Check, Txn
from zdm.engine.executor import Executor
from zdm.engine.runner import RunRefused, new_steps
from zdm.operations import Context, plan_memo, plan_step
from zdm.plan import PlanError, Settings, load_plan
from zdm.state import Store

Conn = psycopg.Connection[Any]
Checker = Callable[[Conn, Writer, int], None]


@dataclass(frozen=True)
class Case:
    id: str
    phases: str
    check: Checker
    setup: str = ""
    irreversible: str | None = None
    """`phase[i] kind` of the step that rollback must refuse to undo."""
    min_version: int = 0
    """The oldest server the case applies to (named not-null constraints need 18)."""


def column(conn: Conn, table: str, name: str) -> tuple[str, bool, str | None] | None:
    """(type, NOT NULL, default) of a column, or None."""
    row = conn.execute(
        "SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)"
        " FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
        [table, name],
    ).fetchone()
    return (row[0], row[1], row[2]) if row else None


def constraint(conn: Conn, table: str, name: str) -> tuple[str, str, bool] | None:
    """(contype, definition, validated) of a constraint, or None."""
    row = conn.execute(
        "SELECT contype::text, pg_get_constraintdef(oid), convalidated FROM pg_constraint"
        " WHERE conrelid = to_regclass(%s) AND conname = %s",
        [table, name],
    ).fetchone()
    return (row[0], row[1], row[2]) if row else None


def index(conn: Conn, name: str) -> tuple[str, bool] | None:
    """(definition, valid) of an index, or None."""
    row = conn.execute(
        "SELECT pg_get_indexdef(indexrelid), indisvalid AND indisready FROM pg_index"
        " WHERE indexrelid = to_regclass(%s)",
        [name],
    ).fetchone()
    return (row[0], row[1]) if row else None


def exists(conn: Conn, name: str) -> bool:
    return bool(scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", [name]))


def trigger_and_function(conn: Conn, name: str) -> tuple[bool, bool]:
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = %s),"
        " to_regprocedure(%s) IS NOT NULL",
        [name, f'public."{name}"()'],
    ).fetchone()  # type: ignore[return-value]


def rejects(conn: Conn, error: type[Exception], statement: str, params: Any = None) -> None:
    """`statement` fails with `error` (in a transaction rolled back either way)."""
    with pytest.raises(error), conn.transaction():
        conn.execute(statement, params)


def accepts(conn: Conn, statement: str, params: Any = None) -> list[Any]:
    """Runs `statement` and returns its rows, in a transaction that is then rolled back."""
    with conn.transaction(force_rollback=True):
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def writer_rows_since(conn: Conn, writer: Writer, query: str) -> list[Any]:
    """Rows of `query` (`%s` takes a list of ids) for the rows the writer inserts or updates
    from this moment on, which must see whatever the run just created; waits for a few."""
    mark = writer.seq
    writer.wait_ops(6, since=mark)
    ids = sorted({row_id for _, _, row_id in writer.ops_since(mark)})
    return conn.execute(query, [ids]).fetchall()


# --- forward effects, one per case ---------------------------------------------------------


def created_table(conn: Conn, writer: Writer, version: int) -> None:
    assert column(conn, "widgets", "label") == ("text", True, "'x'::text")
    assert constraint(conn, "widgets", "widgets_pkey") == ("p", "PRIMARY KEY (id)", True)
    assert constraint(conn, "widgets", "widgets_item_id_fkey") == (
        "f",
        "FOREIGN KEY (item_id) REFERENCES items(id)",
        True,
    )
    assert constraint(conn, "widgets", "widgets_label_check") == (
        "c",
        "CHECK ((length(label) > 0))",
        True,
    )
    accepts(conn, "INSERT INTO widgets (id, item_id) VALUES (1, 1)")
    rejects(conn, errors.ForeignKeyViolation, "INSERT INTO widgets (id, item_id) VALUES (1, -1)")


def dropped_scratch(conn: Conn, writer: Writer, version: int) -> None:
    assert not exists(conn, "scratch")


def renamed_scratch(conn: Conn, writer: Writer, version: int) -> None:
    assert not exists(conn, "scratch")
    assert scalar(conn, "SELECT count(*) FROM scratch_v2") == 20


def added_flag(conn: Conn, writer: Writer, version: int) -> None:
    assert column(conn, "items", "flag") == ("boolean", True, "false")
    assert scalar(conn, "SELECT count(*) FROM items WHERE flag IS DISTINCT FROM false") == 0


def dropped_spare(conn: Conn, writer: Writer, version: int) -> None:
    assert column(conn, "items", "spare") is None
    # The earlier, reversible step of the plan.
    assert column(conn, "items", "extra") == ("text", False, None)


def renamed_spare(conn: Conn, writer: Writer, version: int) -> None:
    assert column(conn, "items", "spare") is None
    assert column(conn, "items", "spare_v2") == ("text", False, None)
    assert scalar(conn, "SELECT spare_v2 FROM items WHERE id = 7") == "spare 7"


def set_note_default(conn: Conn, writer: Writer, version: int) -> None:
    assert column(conn, "items", "note") == ("text", False, "'n/a'::text")
    rows = accepts(conn, "INSERT INTO items (id, name) VALUES (900001, 'x') RETURNING note")
    assert rows == [("n/a",)]


def commented_note(conn: Conn, writer: Writer, version: int) -> None:
    row = conn.execute(
        "SELECT col_description('items'::regclass, 5), obj_description('items'::regclass)"
    ).fetchone()
    assert row == ("what it says", "the items")


def renamed_constraint(conn: Conn, writer: Writer, version: int) -> None:
    names = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'items'::regclass AND contype = 'c'"
    ).fetchall()
    assert names == [("qty_not_huge",)]


def identity_full(conn: Conn, writer: Writer, version: int) -> None:
    row = conn.execute("SELECT relreplident FROM pg_class WHERE oid = 'items'::regclass")
    assert row.fetchone() == ("f",)


def keyed(conn: Conn, writer: Writer, version: int) -> None:
    row = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'keyless'::regclass AND contype = 'p'"
    ).fetchone()
    assert row == ("keyless_pkey", "PRIMARY KEY (a, b)")


def set_qty_default(conn: Conn, writer: Writer, version: int) -> None:
    assert column(conn, "items", "qty") == ("integer", True, "1")
    assert accepts(conn, "INSERT INTO items (id, name) VALUES (900001, 'x') RETURNING qty") == [
        (1,)
    ]


def dropped_qty_default(conn: Conn, writer: Writer, version: int) -> None:
    assert column(conn, "items", "qty") == ("integer", True, None)


def note_not_null(conn: Conn, writer: Writer, version: int) -> None:
    assert column(conn, "items", "note") == ("text", True, None)
    if version >= PG18:
        assert constraint(conn, "items", "items_note_not_null") == ("n", "NOT NULL note", True)
    else:
        assert constraint(conn, "items", "items_note_zdm_not_null") is None
    rejects(conn, errors.NotNullViolation, "INSERT INTO items (id, name) VALUES (900001, 'x')")


def name_nullable(conn: Conn, writer: Writer, version: int) -> None:
    assert column(conn, "items", "name") == ("text", False, None)
    assert constraint(conn, "items", "items_name_not_null") is None
    accepts(conn, "INSERT INTO items (id) VALUES (900001)")


def built_index(conn: Conn, writer: Writer, version: int) -> None:
    assert index(conn, '"Items By Qty"') == (
        'CREATE INDEX "Items By Qty" ON public.items USING btree (qty) INCLUDE (name)'
        " WHERE (qty > 0)",
        True,
    )


def built_unique_expression_index(conn: Conn, writer: Writer, version: int) -> None:
    assert index(conn, "items_lower_name") == (
        "CREATE UNIQUE INDEX items_lower_name ON public.items USING btree (lower(name))",
        True,
    )
    rejects(conn, errors.UniqueViolation, "INSERT INTO items (id, name) VALUES (900001, 'ITEM 1')")


def dropped_index(conn: Conn, writer: Writer, version: int) -> None:
    assert index(conn, "items_note_idx") is None
    assert exists(conn, "items")


def added_check(conn: Conn, writer: Writer, version: int) -> None:
    assert constraint(conn, "items", "qty_nonneg") == ("c", "CHECK ((qty >= 0))", True)
    rejects(conn, errors.CheckViolation, "UPDATE items SET qty = -1 WHERE id = 1")


def added_foreign_key(conn: Conn, writer: Writer, version: int) -> None:
    assert constraint(conn, "items", "items_parent_fk") == (
        "f",
        "FOREIGN KEY (parent_id) REFERENCES parents(id) ON DELETE SET NULL",
        True,
    )
    rejects(conn, errors.ForeignKeyViolation, "UPDATE items SET parent_id = 99 WHERE id = 1")


def added_unique(conn: Conn, writer: Writer, version: int) -> None:
    assert constraint(conn, "items", "items_name_key") == ("u", "UNIQUE (name)", True)
    assert index(conn, "items_name_key") == (
        "CREATE UNIQUE INDEX items_name_key ON public.items USING btree (name)",
        True,
    )
    rejects(conn, errors.UniqueViolation, "UPDATE items SET name = 'item 1' WHERE id = 2")


def validated_check(conn: Conn, writer: Writer, version: int) -> None:
    assert constraint(conn, "items", "qty_small") == ("c", "CHECK ((qty < 1000))", True)


def dropped_constraint(conn: Conn, writer: Writer, version: int) -> None:
    assert constraint(conn, "items", "qty_small") is None
    accepts(conn, "UPDATE items SET qty = 5000 WHERE id = 1")


def dropped_foreign_key(conn: Conn, writer: Writer, version: int) -> None:
    assert constraint(conn, "items", "items_parent_fk") is None
    accepts(conn, "UPDATE items SET parent_id = 99 WHERE id = 1")


def dropped_unique(conn: Conn, writer: Writer, version: int) -> None:
    assert constraint(conn, "items", "items_name_key") is None
    assert index(conn, "items_name_key") is None
    accepts(conn, "UPDATE items SET name = 'item 1' WHERE id = 2")


def dropped_primary_key(conn: Conn, writer: Writer, version: int) -> None:
    assert constraint(conn, "items", "items_pkey") is None
    assert index(conn, "items_pkey") is None
    accepts(conn, "INSERT INTO items (id, name) VALUES (1, 'twin')")


def dropped_named_not_null(conn: Conn, writer: Writer, version: int) -> None:
    assert constraint(conn, "items", "name_present") is None
    assert column(conn, "items", "name") == ("text", False, None)


def validated_named_not_null(conn: Conn, writer: Writer, version: int) -> None:
    # The column's own NOT VALID constraint, validated under its name; no second one.
    assert constraint(conn, "items", "note_present") == ("n", "NOT NULL note", True)
    assert constraint(conn, "items", "items_note_not_null") is None
    rejects(conn, errors.NotNullViolation, "INSERT INTO items (id, name) VALUES (900001, 'x')")


def note_nullable(conn: Conn, writer: Writer, version: int) -> None:
    assert column(conn, "items", "note") == ("text", False, None)
    assert constraint(conn, "items", "note_present") is None


def dual_writes_upper(conn: Conn, writer: Writer, version: int) -> None:
    assert trigger_and_function(conn, "zdm_dw_items") == (True, True)
    # The application's own inserts and updates, made after the trigger exists.
    rows = writer_rows_since(conn, writer, "SELECT name, name_upper FROM items WHERE id = ANY(%s)")
    assert rows
    assert all(upper == name.upper() for name, upper in rows)
    assert accepts(
        conn, "INSERT INTO items (id, name) VALUES (900001, 'abc') RETURNING name_upper"
    ) == [("ABC",)]
    assert accepts(conn, "UPDATE items SET name = 'xyz' WHERE id = 3 RETURNING name_upper") == [
        ("XYZ",)
    ]


def dual_writes_title(conn: Conn, writer: Writer, version: int) -> None:
    # Old writers write `name`; `title` follows. New writers (who say so) write `title`; `name`
    # follows.
    rows = writer_rows_since(conn, writer, "SELECT name, title FROM items WHERE id = ANY(%s)")
    assert rows
    assert all(name == title for name, title in rows)
    conn.execute("SET zdm.writer = 'new'")
    assert accepts(
        conn, "INSERT INTO items (id, title) VALUES (900001, 'new') RETURNING name, title"
    ) == [("new", "new")]
    conn.execute("RESET zdm.writer")
    assert accepts(
        conn, "UPDATE items SET title = 'renamed' WHERE id = 3 RETURNING name, title"
    ) == [("renamed", "renamed")]
    assert accepts(
        conn, "UPDATE items SET name = 'old way' WHERE id = 3 RETURNING name, title"
    ) == [("old way", "old way")]


def dropped_dual_write(conn: Conn, writer: Writer, version: int) -> None:
    assert trigger_and_function(conn, "zdm_dw_items") == (False, False)
    assert accepts(conn, "UPDATE items SET name = 'xyz' WHERE id = 3 RETURNING name_upper") == [
        (None,)
    ]


def backfilled(conn: Conn, writer: Writer, version: int) -> None:
    assert (
        scalar(conn, "SELECT count(*) FROM items WHERE name_len IS DISTINCT FROM length(name)") == 0
    )
    assert scalar(conn, "SELECT count(*) FROM items WHERE id < %s", [WRITER_IDS]) == 200


def verified(conn: Conn, writer: Writer, version: int) -> None:
    pass  # the run completed: the query returned what the plan expects


def sql_index(conn: Conn, writer: Writer, version: int) -> None:
    assert index(conn, "items_qty_sql") == (
        "CREATE INDEX items_qty_sql ON public.items USING btree (qty)",
        True,
    )


def sql_column(conn: Conn, writer: Writer, version: int) -> None:
    assert column(conn, "items", "sql_col") == ("integer", False, None)


UPPER = """
additive:
  - add_column: {table: items, column: {name: name_upper, type: text}}
dual_write:
  - dual_write: {table: items, set: {name_upper: upper(name)}}
"""

CASES = [
    Case(
        "create_table",
        """
        additive:
          - create_table:
              table: widgets
              columns:
                - {name: id, type: bigint, primary_key: true}
                - {name: item_id, type: bigint, references: {table: items}}
                - {name: label, type: text, nullable: false, default: "'x'", check: length(label) > 0}
        """,
        created_table,
    ),
    Case(
        "drop_table",
        "cleanup:\n  - drop_table: {table: scratch}\n",
        dropped_scratch,
        irreversible="cleanup[0] drop_table",
    ),
    Case(
        "rename_table",
        "cleanup:\n  - rename_table: {table: scratch, to: scratch_v2}\n",
        renamed_scratch,
    ),
    Case(
        "add_column",
        "additive:\n  - add_column: {table: items, column: {name: flag, type: boolean, nullable: false, default: 'false'}}\n",
        added_flag,
    ),
    Case(
        "drop_column",
        """
        additive:
          - add_column: {table: items, column: {name: extra, type: text}}
        cleanup:
          - drop_column: {table: items, column: spare}
        """,
        dropped_spare,
        irreversible="cleanup[0] drop_column",
    ),
    Case(
        "rename_column",
        "cleanup:\n  - rename_column: {table: items, column: spare, to: spare_v2}\n",
        renamed_spare,
    ),
    Case(
        "set_default",
        "additive:\n  - set_default: {table: items, column: note, default: \"'n/a'\"}\n",
        set_note_default,
    ),
    Case(
        "set_comment",
        "additive:\n  - set_comment: {table: items, column: note, comment: what it says}\n"
        "  - set_comment: {table: items, comment: the items}\n",
        commented_note,
        setup="COMMENT ON COLUMN items.note IS 'before'",
    ),
    Case(
        "rename_constraint",
        "cleanup:\n  - rename_constraint: {table: items, name: qty_small, to: qty_not_huge}\n",
        renamed_constraint,
        setup="ALTER TABLE items ADD CONSTRAINT qty_small CHECK (qty < 1000)",
    ),
    Case(
        "set_replica_identity",
        "additive:\n  - set_replica_identity: {table: items, type: full}\n",
        identity_full,
    ),
    Case(
        "add_primary_key",
        "additive:\n  - add_primary_key: {table: keyless, name: keyless_pkey, columns: [a, b]}\n",
        keyed,
        setup="CREATE TABLE keyless (a int NOT NULL, b text NOT NULL);"
        " INSERT INTO keyless SELECT g, 'b' || g FROM generate_series(1, 50) g",
    ),
    Case(
        "set_default_over_a_default",
        "additive:\n  - set_default: {table: items, column: qty, default: '1'}\n",
        set_qty_default,
    ),
    Case(
        "drop_default",
        "cleanup:\n  - drop_default: {table: items, column: qty}\n",
        dropped_qty_default,
    ),
    Case(
        "set_not_null", "cleanup:\n  - set_not_null: {table: items, column: note}\n", note_not_null
    ),
    Case(
        "drop_not_null",
        "cleanup:\n  - drop_not_null: {table: items, column: name}\n",
        name_nullable,
    ),
    # PostgreSQL 18: not-null constraints have names and may be NOT VALID; both come back.
    Case(
        "drop_not_null_named",
        "cleanup:\n  - drop_not_null: {table: items, column: name}\n",
        name_nullable,
        setup="ALTER TABLE items RENAME CONSTRAINT items_name_not_null TO name_present",
        min_version=PG18,
    ),
    Case(
        "drop_not_null_not_valid",
        "cleanup:\n  - drop_not_null: {table: items, column: note}\n",
        note_nullable,
        setup="ALTER TABLE items ADD CONSTRAINT note_present NOT NULL note NOT VALID",
        min_version=PG18,
    ),
    Case(
        "set_not_null_over_not_valid",
        "cleanup:\n  - set_not_null: {table: items, column: note}\n",
        validated_named_not_null,
        setup="ALTER TABLE items ADD CONSTRAINT note_present NOT NULL note NOT VALID",
        min_version=PG18,
    ),
    Case(
        "create_index",
        """
        additive:
          - create_index: {table: items, name: Items By Qty, columns: [qty], include: [name], where: qty > 0}
        """,
        built_index,
    ),
    Case(
        "create_index_unique_expression",
        "additive:\n  - create_index: {table: items, name: items_lower_name, expression: lower(name), unique: true}\n",
        built_unique_expression_index,
    ),
    Case(
        "drop_index",
        "cleanup:\n  - drop_index: {name: items_note_idx}\n",
        dropped_index,
        setup="CREATE INDEX items_note_idx ON items (lower(note)) INCLUDE (qty)"
        " WITH (fillfactor = 70) WHERE qty > 0",
    ),
    Case(
        "add_check",
        "additive:\n  - add_check: {table: items, name: qty_nonneg, check: qty >= 0}\n",
        added_check,
    ),
    Case(
        "add_foreign_key",
        """
        additive:
          - add_foreign_key:
              table: items
              name: items_parent_fk
              columns: [parent_id]
              references: {table: parents, columns: [id]}
              on_delete: set null
        """,
        added_foreign_key,
    ),
    Case(
        "add_unique",
        "additive:\n  - add_unique: {table: items, name: items_name_key, columns: [name]}\n",
        added_unique,
    ),
    Case(
        "validate_constraint",
        """
        additive:
          - add_check: {table: items, name: qty_small, check: qty < 1000, validate: false}
        dual_read:
          - validate_constraint: {table: items, name: qty_small}
        """,
        validated_check,
    ),
    Case(
        "drop_constraint",
        "cleanup:\n  - drop_constraint: {table: items, name: qty_small}\n",
        dropped_constraint,
        setup="ALTER TABLE items ADD CONSTRAINT qty_small CHECK (qty < 1000)",
    ),
    Case(
        "drop_constraint_not_valid_check",
        "cleanup:\n  - drop_constraint: {table: items, name: qty_small}\n",
        dropped_constraint,
        setup="UPDATE items SET qty = 1000 WHERE id = 3;"
        " ALTER TABLE items ADD CONSTRAINT qty_small CHECK (qty < 1000) NOT VALID",
    ),
    Case(
        "drop_constraint_foreign_key",
        "cleanup:\n  - drop_constraint: {table: items, name: items_parent_fk}\n",
        dropped_foreign_key,
        setup="ALTER TABLE items ADD CONSTRAINT items_parent_fk FOREIGN KEY (parent_id)"
        " REFERENCES parents (id) ON DELETE SET NULL",
    ),
    Case(
        "drop_constraint_unique",
        "cleanup:\n  - drop_constraint: {table: items, name: items_name_key}\n",
        dropped_unique,
        setup="ALTER TABLE items ADD CONSTRAINT items_name_key UNIQUE (name) INCLUDE (qty)",
    ),
    Case(
        "drop_constraint_primary_key",
        "cleanup:\n  - drop_constraint: {table: items, name: items_pkey}\n",
        dropped_primary_key,
    ),
    Case(
        "drop_constraint_not_null",
        "cleanup:\n  - drop_constraint: {table: items, name: name_present}\n",
        dropped_named_not_null,
        setup="ALTER TABLE items RENAME CONSTRAINT items_name_not_null TO name_present",
        min_version=PG18,
    ),
    Case("dual_write", UPPER, dual_writes_upper),
    Case(
        "dual_write_reverse",
        """
        additive:
          - add_column: {table: items, column: {name: title, type: text}}
        dual_write:
          - dual_write: {table: items, set: {title: name}, reverse: {name: title}}
        """,
        dual_writes_title,
    ),
    Case(
        "drop_dual_write",
        UPPER + "cleanup:\n  - drop_dual_write: {table: items}\n",
        dropped_dual_write,
    ),
    Case(
        "backfill",
        """
        additive:
          - add_column: {table: items, column: {name: name_len, type: integer}}
        dual_write:
          - dual_write: {table: items, set: {name_len: length(name)}}
        backfill:
          - backfill: {table: items, batch_size: 50}
        """,
        backfilled,
    ),
    Case(
        "verify",
        "dual_read:\n  - verify: {sql: SELECT count(*) FROM items WHERE qty < 0, expect: 0}\n",
        verified,
    ),
    Case(
        "sql_concurrently",
        """
        additive:
          - sql:
              up: CREATE INDEX CONCURRENTLY items_qty_sql ON items (qty)
              down: DROP INDEX CONCURRENTLY items_qty_sql
              transactional: false
              lock: SHARE UPDATE EXCLUSIVE
        """,
        sql_index,
    ),
    Case(
        "sql",
        """
        additive:
          - sql:
              up: ALTER TABLE items ADD COLUMN sql_col integer
              down: ALTER TABLE items DROP COLUMN sql_col
              lock: ACCESS EXCLUSIVE
        """,
        sql_column,
    ),
    Case(
        "sql_without_down",
        """
        additive:
          - add_column: {table: items, column: {name: extra, type: text}}
          - sql: {up: ALTER TABLE items ADD COLUMN sql_col integer, lock: ACCESS EXCLUSIVE}
        """,
        sql_column,
        irreversible="additive[1] sql",
    ),
]


@pytest.fixture
def base(conn: Conn) -> Conn:
    conn.execute(BASE_DDL)
    return conn


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_lifecycle(case: Case, base: Conn, dsn: str, tmp_path: Path, server_version: int) -> None:
    if server_version < case.min_version:
        pytest.skip(f"needs PostgreSQL {case.min_version // 10000}")
    conn = base
    if case.setup:
        conn.execute(case.setup)
    plan = write_plan(tmp_path / "plan.yaml", case.phases)
    before = snapshot(conn)

    with Writer(dsn) as writer:
        first = api.run_plan(plan, dsn)
        assert (first.status, first.exit_code) == ("completed", 0), first.message
        case.check(conn, writer, server_version)
        after = snapshot(conn)
        assert (after == before) is (case.id == "verify")

        if case.irreversible is not None:
            with pytest.raises(RunRefused, match=re.escape(case.irreversible)) as refused:
                api.rollback(plan, dsn)
            assert "nothing was undone" in str(refused.value)
            assert snapshot(conn) == after
            again = api.run_plan(plan, dsn)
            assert (again.status, again.run_id) == ("completed", first.run_id), again.message
        else:
            undone = api.rollback(plan, dsn)
            assert (undone.status, undone.exit_code) == ("rolled_back", 0), undone.message
            assert snapshot(conn) == before
            # A rolled-back plan can run again: a new run, to the end.
            second = api.run_plan(plan, dsn)
            assert (second.status, second.exit_code) == ("completed", 0), second.message
            assert second.run_id != first.run_id
            case.check(conn, writer, server_version)
            assert snapshot(conn) == after
        # The application still writes after the last run, on whatever the plan left.
        writer.wait_ops(5)

    writer.check_rows(conn)


# --- half-finished steps ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phases", "bad", "fix", "check"),
    [
        pytest.param(
            "cleanup:\n  - set_not_null: {table: items, column: note}\n",
            "UPDATE items SET note = NULL WHERE id = 5",
            "UPDATE items SET note = 'note 5' WHERE id = 5",
            note_not_null,
            id="set_not_null",
        ),
        pytest.param(
            "additive:\n  - add_check: {table: items, name: qty_nonneg, check: qty >= 0}\n",
            "UPDATE items SET qty = -1 WHERE id = 5",
            "UPDATE items SET qty = 5 WHERE id = 5",
            added_check,
            id="add_check",
        ),
        pytest.param(
            """
            additive:
              - add_foreign_key:
                  table: items
                  name: items_parent_fk
                  columns: [parent_id]
                  references: {table: parents, columns: [id]}
                  on_delete: set null
            """,
            "UPDATE items SET parent_id = 42 WHERE id = 5",
            "UPDATE items SET parent_id = 1 WHERE id = 5",
            added_foreign_key,
            id="add_foreign_key",
        ),
        pytest.param(
            "additive:\n  - add_unique: {table: items, name: items_name_key, columns: [name]}\n",
            "UPDATE items SET name = 'item 4' WHERE id = 5",
            "UPDATE items SET name = 'item 5' WHERE id = 5",
            added_unique,
            id="add_unique",
        ),
        pytest.param(
            "additive:\n  - create_index: {table: items, name: items_lower_name,"
            " expression: lower(name), unique: true}\n",
            "UPDATE items SET name = 'ITEM 4' WHERE id = 5",
            "UPDATE items SET name = 'item 5' WHERE id = 5",
            built_unique_expression_index,
            id="create_index",
        ),
        pytest.param(
            """
            additive:
              - add_column: {table: items, column: {name: ratio, type: integer}}
            dual_write:
              - dual_write: {table: items, set: {ratio: 100 / (qty + 1)}}
            backfill:
              - backfill: {table: items, batch_size: 20}
            """,
            "UPDATE items SET qty = -1 WHERE id = 150",
            "UPDATE items SET qty = 1 WHERE id = 150",
            lambda conn, writer, version: None,
            id="backfill",
        ),
    ],
)
def test_rollback_of_a_failed_step_leaves_nothing_behind(
    phases: str,
    bad: str,
    fix: str,
    check: Checker,
    base: Conn,
    dsn: str,
    tmp_path: Path,
    server_version: int,
) -> None:
    conn = base
    conn.execute(bad)
    plan = write_plan(tmp_path / "plan.yaml", phases)
    before = snapshot(conn)
    with Writer(dsn) as writer:
        failed = api.run_plan(plan, dsn)
        assert (failed.status, failed.exit_code) == ("failed", 1), failed.message
        undone = api.rollback(plan, dsn)
        assert (undone.status, undone.exit_code) == ("rolled_back", 0), undone.message
        assert snapshot(conn) == before
        conn.execute(fix)
        out = api.run_plan(plan, dsn)
        assert (out.status, out.exit_code) == ("completed", 0), out.message
        check(conn, writer, server_version)
    writer.check_rows(conn)


# --- idempotence ---------------------------------------------------------------------------


def forward_units(plan: Path, server_version: int) -> list[tuple[int, Action]]:
    """Every unit of work the plan's steps plan, in order, with its step's ordinal (checks only
    read, so not those)."""
    loaded = load_plan(plan)
    ctx = Context(loaded.plan.schema_, server_version, loaded.plan, loaded.base_dir)
    return [
        (ordinal, action)
        for ordinal, step in enumerate(loaded.steps())
        for action in plan_step(step.spec, ctx)
        if not isinstance(action, Check)
    ]


def crash_after(conn: Conn, plan: Path, units: list[tuple[int, Action]]) -> None:
    """Does the work of `units` as a run does, then leaves the state a process killed right after
    leaves: the run recorded, the steps it had started `running` with what they remembered before
    their work, none of their bookkeeping done."""
    loaded = load_plan(plan)
    ctx = Context(loaded.plan.schema_, conn.info.server_version, loaded.plan, loaded.base_dir)
    steps = loaded.plan.steps()
    store = Store()
    store.ensure(conn)
    run = store.create_run(conn, loaded.name, loaded.sha256, str(plan), new_steps(steps))
    executor = Executor(conn, Settings())
    started: set[int] = set()
    for ordinal, unit in units:
        if ordinal not in started:
            started.add(ordinal)
            memo = plan_memo(steps[ordinal].spec, ctx)
            store.step_started(conn, run.id, ordinal, remember=memo)
        if isinstance(unit, Txn):
            executor.run(unit)
        else:
            assert isinstance(unit, BackfillJob)
            conn.execute(
                sql.SQL("UPDATE {} SET {}").format(
                    unit.table.ident(),
                    sql.SQL(", ").join(
                        sql.SQL("{} = ({})").format(sql.Identifier(c), sql.SQL(e))  # type: ignore[arg-type]
                        for c, e in unit.set.items()
                    ),
                )
            )


# sql steps have no catalog probe: the author's SQL runs again on resume, so it must be
# idempotent itself (IF NOT EXISTS); verify does nothing to crash after.
NOT_PROBED = {"sql", "sql_concurrently", "sql_without_down", "verify"}


@pytest.mark.parametrize("case", [c for c in CASES if c.id not in NOT_PROBED], ids=lambda c: c.id)
def test_resume_after_crash_between_work_and_bookkeeping(
    case: Case, base: Conn, dsn: str, tmp_path: Path, server_version: int
) -> None:
    if server_version < case.min_version:
        pytest.skip(f"needs PostgreSQL {case.min_version // 10000}")
    conn = base
    if case.setup:
        conn.execute(case.setup)
    plan = write_plan(tmp_path / "plan.yaml", case.phases)
    units = forward_units(plan, server_version)

    if case.irreversible is not None:
        crash_after(conn, plan, units)
        out = api.run_plan(plan, dsn)
        assert (out.status, out.exit_code) == ("completed", 0), out.message
        case.check(conn, Writer(dsn), server_version)
        return

    before = snapshot(conn)
    clean = api.run_plan(plan, dsn)
    assert clean.status == "completed", clean.message
    after = snapshot(conn)
    assert api.rollback(plan, dsn).status == "rolled_back"
    assert snapshot(conn) == before

    for done in range(1, len(units) + 1):
        crash_after(conn, plan, units[:done])
        out = api.run_plan(plan, dsn)
        assert (out.status, out.exit_code) == ("completed", 0), f"after unit {done}: {out.message}"
        assert snapshot(conn) == after, f"after unit {done}"
        undone = api.rollback(plan, dsn)
        assert undone.status == "rolled_back", f"after unit {done}: {undone.message}"
        assert snapshot(conn) == before, f"after unit {done}"


def leave_invalid_index(conn: Conn, statement: str) -> None:
    """A unique concurrent build over duplicate names fails and leaves its index INVALID."""
    conn.execute("UPDATE items SET name = 'dup' WHERE id IN (1, 2)")
    with pytest.raises(errors.UniqueViolation):
        conn.execute(statement)
    conn.execute("UPDATE items SET name = 'item ' || id WHERE id IN (1, 2)")


@pytest.mark.parametrize(
    ("leftover", "phases", "check"),
    [
        pytest.param(
            'CREATE UNIQUE INDEX CONCURRENTLY "Items By Qty" ON items (name)',
            "additive:\n  - create_index: {table: items, name: Items By Qty, columns: [qty],"
            " include: [name], where: qty > 0}\n",
            built_index,
            id="create_index",
        ),
        pytest.param(
            "CREATE UNIQUE INDEX CONCURRENTLY items_lower_name ON items (lower(name))",
            "additive:\n  - create_index: {table: items, name: items_lower_name,"
            " expression: lower(name), unique: true}\n",
            built_unique_expression_index,
            id="create_index_unique",
        ),
        pytest.param(
            "CREATE UNIQUE INDEX CONCURRENTLY items_name_key ON items (name)",
            "additive:\n  - add_unique: {table: items, name: items_name_key, columns: [name]}\n",
            added_unique,
            id="add_unique",
        ),
    ],
)
def test_invalid_index_of_the_same_name_is_dropped_and_rebuilt(
    leftover: str,
    phases: str,
    check: Checker,
    base: Conn,
    dsn: str,
    tmp_path: Path,
    server_version: int,
) -> None:
    conn = base
    leave_invalid_index(conn, leftover)
    name = leftover.split(" ON ")[0].rsplit("CONCURRENTLY ", 1)[1]
    assert (
        scalar(conn, "SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", [name])
        is False
    )
    # IF NOT EXISTS would have reported success over it.
    out = api.run_plan(write_plan(tmp_path / "plan.yaml", phases), dsn)
    assert (out.status, out.exit_code) == ("completed", 0), out.message
    check(conn, Writer(dsn), server_version)
    assert scalar(conn, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0


def test_add_primary_key_refuses_nullable_columns(base: Conn, dsn: str, tmp_path: Path) -> None:
    base.execute(
        "CREATE TABLE keyless (a int NOT NULL, b text); INSERT INTO keyless VALUES (1, 'x')"
    )
    plan = write_plan(
        tmp_path / "plan.yaml",
        "additive:\n  - add_primary_key: {table: keyless, name: keyless_pkey, columns: [a, b]}\n",
    )
    outcome = api.run_plan(plan, dsn)
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    assert "column b of public.keyless may be NULL" in outcome.message
    # Refused before anything was built.
    assert scalar(base, "SELECT count(*) FROM pg_class WHERE relname = 'keyless_pkey'") == 0


def test_add_column_refuses_a_volatile_default(base: Conn, dsn: str, tmp_path: Path) -> None:
    conn = base
    filenode = scalar(conn, "SELECT pg_relation_filenode('items')")
    plan = write_plan(
        tmp_path / "plan.yaml",
        "additive:\n  - add_column: {table: items, column: {name: at, type: timestamptz,"
        " default: clock_timestamp()}}\n",
    )
    try:
        out = api.run_plan(plan, dsn)
        refused = out.exit_code != 0
    except (RunRefused, PlanError):
        refused = True
    assert scalar(conn, "SELECT pg_relation_filenode('items')") == filenode, "table rewritten"
    assert refused


ODD_SETUP = """
CREATE SCHEMA "My App";
CREATE TABLE "My App"."Odd ""T"" x" (
    id int PRIMARY KEY,
    "Na""me" text NOT NULL,
    "Qt'y" int NOT NULL DEFAULT 1,
    "Ol""d" text
);
INSERT INTO "My App"."Odd ""T"" x" SELECT g, 'Name ' || g, g, 'o' || g FROM generate_series(1, 50) g;
CREATE INDEX "Old ""I"" x" ON "My App"."Odd ""T"" x" (lower("Na""me")) WHERE "Qt'y" > 0;
ALTER TABLE "My App"."Odd ""T"" x" ADD CONSTRAINT "Old ""C"" x" CHECK ("Qt'y" < 1000) NOT VALID;
"""

ODD_PLAN = '''
additive:
  - add_column: {table: 'Odd "T" x', column: {name: 'New "Col"', type: text}}
  - create_index: {table: 'Odd "T" x', name: 'Idx "Q"', columns: ["Qt'y"], include: ['Ol"d']}
  - add_check: {table: 'Odd "T" x', name: 'Chk "Q"', check: "\\"Qt'y\\" >= 0"}
  - add_unique: {table: 'Odd "T" x', name: 'Uq "N"', columns: ['Na"me']}
  - set_default: {table: 'Odd "T" x', column: 'Ol"d', default: "'d'"}
dual_write:
  - dual_write:
      table: 'Odd "T" x'
      name: 'Dw "T"'
      set: {'New "Col"': 'upper("Na""me")'}
      reverse: {'Na"me': 'lower("New ""Col""")'}
backfill:
  - backfill: {table: 'Odd "T" x', batch_size: 7}
cleanup:
  - set_not_null: {table: 'Odd "T" x', column: 'New "Col"'}
  - drop_not_null: {table: 'Odd "T" x', column: "Qt'y"}
  - rename_column: {table: 'Odd "T" x', column: 'Ol"d', to: 'Ol"d 2'}
  - drop_dual_write: {table: 'Odd "T" x', name: 'Dw "T"'}
  - drop_index: {name: 'Old "I" x'}
  - drop_constraint: {table: 'Odd "T" x', name: 'Old "C" x'}
  - rename_table: {table: 'Odd "T" x', to: 'Odd "T" 2'}
'''


def test_lifecycle_with_identifiers_that_need_quoting(
    conn: Conn, dsn: str, tmp_path: Path, server_version: int
) -> None:
    conn.execute(ODD_SETUP)
    plan = write_plan(tmp_path / "plan.yaml", ODD_PLAN, extra='schema: "My App"\n')
    before = snapshot(conn, "My App")
    for _ in range(2):
        out = api.run_plan(plan, dsn)
        assert (out.status, out.exit_code) == ("completed", 0), out.message
        table = '"My App"."Odd ""T"" 2"'
        assert (
            scalar(
                conn,
                f'SELECT count(*) FROM {table} WHERE "New ""Col""" IS DISTINCT FROM upper("Na""me")',
            )
            == 0
        )
        assert column(conn, table, 'New "Col"') == ("text", True, None)
        assert column(conn, table, "Qt'y") == ("integer", False, "1")
        assert column(conn, table, 'Ol"d 2') == ("text", False, "'d'::text")
        assert constraint(conn, table, 'Chk "Q"') == ("c", 'CHECK (("Qt\'y" >= 0))', True)
        assert constraint(conn, table, 'Uq "N"') == ("u", 'UNIQUE ("Na""me")', True)
        assert index(conn, '"My App"."Idx ""Q"""') == (
            'CREATE INDEX "Idx ""Q""" ON "My App"."Odd ""T"" 2" USING btree ("Qt\'y")'
            ' INCLUDE ("Ol""d 2")',
            True,
        )
        assert scalar(conn, "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == 0
        assert not exists(conn, '"My App"."Old ""I"" x"')
        assert constraint(conn, table, 'Old "C" x') is None
        undone = api.rollback(plan, dsn)
        assert (undone.status, undone.exit_code) == ("rolled_back", 0), undone.message
        assert snapshot(conn, "My App") == before


def test_rollback_never_drops_what_the_run_did_not_create(
    base: Conn, dsn: str, tmp_path: Path
) -> None:
    # scratch (20 rows) and items.note exist before the plan that "creates" them.
    conn = base
    before = snapshot(conn)
    plan = write_plan(
        tmp_path / "plan.yaml",
        """
        additive:
          - create_table: {table: scratch, columns: [{name: id, type: int, primary_key: true}]}
          - add_column: {table: items, column: {name: note, type: text}}
        """,
    )
    out = api.run_plan(plan, dsn)
    if out.status == "completed":
        with contextlib.suppress(RunRefused):
            api.rollback(plan, dsn)
    assert snapshot(conn) == before


# --- what a step remembers for its inverse ---------------------------------------------------


def remembered(conn: Conn, plan: str = "lifecycle") -> list[Any]:
    """`zdm.steps.remembered` of each step of the plan's latest run."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT s.remembered FROM zdm.steps s WHERE s.run_id ="
            " (SELECT max(id) FROM zdm.runs WHERE plan = %s) ORDER BY s.ordinal",
            [plan],
        ).fetchall()
    ]


def test_rollback_restores_the_default_a_step_replaced(
    base: Conn, dsn: str, tmp_path: Path
) -> None:
    conn = base
    conn.execute(
        "CREATE SEQUENCE note_seq;"
        " ALTER TABLE items ALTER COLUMN note SET DEFAULT 'n' || nextval('note_seq')"
    )
    plan = write_plan(
        tmp_path / "plan.yaml",
        """
        additive:
          - set_default: {table: items, column: qty, default: '5'}
        cleanup:
          - drop_default: {table: items, column: note}
        """,
    )
    before = snapshot(conn)
    first = api.run_plan(plan, dsn)
    assert first.status == "completed", first.message
    # Recorded under an empty search_path: the sequence's schema is named, so the restored
    # default means the same whatever search_path the rollback's session has.
    old_note = "('n'::text || nextval('public.note_seq'::regclass))"
    assert remembered(conn) == [{"default": "0"}, {"default": old_note}]

    shown = api.rollback_dry_run(plan, dsn)
    assert f'ALTER TABLE "public"."items" ALTER COLUMN "note" SET DEFAULT {old_note};' in shown, (
        shown
    )
    assert 'ALTER TABLE "public"."items" ALTER COLUMN "qty" SET DEFAULT 0;' in shown, shown
    assert shown.index('"note" SET DEFAULT') < shown.index('"qty" SET DEFAULT')  # reverse order

    undone = api.rollback(plan, dsn)
    assert (undone.status, undone.exit_code) == ("rolled_back", 0), undone.message
    assert snapshot(conn) == before
    assert column(conn, "items", "note") == (
        "text",
        False,
        "('n'::text || nextval('note_seq'::regclass))",
    )


def test_rollback_without_a_record_refuses_and_names_the_step(
    base: Conn, dsn: str, tmp_path: Path
) -> None:
    conn = base
    plan = write_plan(
        tmp_path / "plan.yaml",
        """
        additive:
          - add_column: {table: items, column: {name: extra, type: text}}
        cleanup:
          - drop_default: {table: items, column: qty}
        """,
    )
    out = api.run_plan(plan, dsn)
    assert out.status == "completed", out.message
    # The state as a zdm from before `remembered` left it: no such column, no record.
    conn.execute("ALTER TABLE zdm.steps DROP COLUMN remembered")
    after = snapshot(conn)
    assert api.status(dsn, "lifecycle")[0].status == "completed"  # read-only: no upgrade

    with pytest.raises(RunRefused, match=re.escape("cleanup[0] drop_default")) as shown:
        api.rollback_dry_run(plan, dsn)
    assert "no record of the default" in str(shown.value)
    assert not scalar(
        conn,
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'zdm.steps'::regclass"
        " AND attname = 'remembered' AND NOT attisdropped)",
    )

    with pytest.raises(RunRefused) as refused:
        api.rollback(plan, dsn)
    message = str(refused.value)
    assert "cannot roll back past step cleanup[0] drop_default" in message
    assert "items.qty" in message and "no record of the default" in message
    assert "nothing was undone" in message
    assert snapshot(conn) == after
    # The rollback upgraded the state schema; the step still has no record.
    assert remembered(conn) == [None, None]


def test_rollback_rebuilds_dropped_indexes_and_constraints_as_they_were(
    base: Conn, dsn: str, tmp_path: Path
) -> None:
    conn = base
    conn.execute(
        "UPDATE items SET qty = 1000 WHERE id = 3;"
        " ALTER TABLE items ADD CONSTRAINT qty_small CHECK (qty < 1000) NOT VALID;"
        " ALTER TABLE items ADD CONSTRAINT items_parent_fk FOREIGN KEY (parent_id)"
        " REFERENCES parents (id) ON DELETE SET NULL;"
        " ALTER TABLE items ADD CONSTRAINT items_name_key UNIQUE (name) DEFERRABLE;"
        " CREATE INDEX items_note_idx ON items (lower(note)) WHERE qty > 0;"
        " COMMENT ON INDEX items_note_idx IS 'by note'"
    )
    plan = write_plan(
        tmp_path / "plan.yaml",
        """
        cleanup:
          - drop_index: {name: items_note_idx}
          - drop_constraint: {table: items, name: qty_small}
          - drop_constraint: {table: items, name: items_parent_fk}
          - drop_constraint: {table: items, name: items_name_key}
        """,
    )
    before = snapshot(conn)
    comment = "SELECT obj_description('items_note_idx'::regclass, 'pg_class')"
    with Writer(dsn) as writer:
        first = api.run_plan(plan, dsn)
        assert first.status == "completed", first.message
        # Recorded under an empty search_path: tables are named with their schema.
        index_record, check, fk, unique = remembered(conn)
        assert index_record["index"]["definition"] == (
            "CREATE INDEX items_note_idx ON public.items USING btree (lower(note)) WHERE (qty > 0)"
        )
        assert index_record["index"]["comment"] == "by note"
        assert check["constraint"]["definition"] == "CHECK ((qty < 1000)) NOT VALID"
        assert check["constraint"]["validated"] is False
        assert fk["constraint"]["definition"] == (
            "FOREIGN KEY (parent_id) REFERENCES public.parents(id) ON DELETE SET NULL"
        )
        assert unique["constraint"]["index"]["name"] == "items_name_key"

        # The dry-run shows the statements that restore them, in reverse order of the steps.
        shown = api.rollback_dry_run(plan, dsn)
        t = '"public"."items"'
        restoring = [
            "CREATE UNIQUE INDEX CONCURRENTLY items_name_key ON public.items USING btree (name);",
            f'ALTER TABLE {t} ADD CONSTRAINT "items_name_key" UNIQUE USING INDEX'
            ' "items_name_key" DEFERRABLE;',
            f'ALTER TABLE {t} ADD CONSTRAINT "items_parent_fk" FOREIGN KEY (parent_id)'
            " REFERENCES public.parents(id) ON DELETE SET NULL NOT VALID;",
            f'ALTER TABLE {t} VALIDATE CONSTRAINT "items_parent_fk";',
            f'ALTER TABLE {t} ADD CONSTRAINT "qty_small" CHECK ((qty < 1000)) NOT VALID;',
            "CREATE INDEX CONCURRENTLY items_note_idx ON public.items USING btree (lower(note))"
            " WHERE (qty > 0);",
            """COMMENT ON INDEX "public"."items_note_idx" IS 'by note';""",
        ]
        lines = shown.splitlines()
        assert [line for line in lines if line in restoring] == restoring, shown
        # The check that was NOT VALID stays so: it is never validated.
        assert 'VALIDATE CONSTRAINT "qty_small"' not in shown

        undone = api.rollback(plan, dsn)
        assert (undone.status, undone.exit_code) == ("rolled_back", 0), undone.message
        assert snapshot(conn) == before
        assert scalar(conn, comment) == "by note"
    writer.check_rows(conn)


@pytest.mark.parametrize(
    ("setup", "phases", "step", "why"),
    [
        pytest.param(
            "CREATE UNIQUE INDEX CONCURRENTLY items_name_idx ON items (name)",
            "cleanup:\n  - drop_index: {name: items_name_idx}\n",
            "cleanup[0] drop_index",
            "index public.items_name_idx was INVALID (left by a failed build)",
            id="invalid_index",
        ),
        pytest.param(
            None,
            """
            additive:
              - add_column: {table: items, column: {name: extra, type: text}}
            cleanup:
              - drop_constraint: {table: items, name: items_no_twin}
            """,
            "cleanup[0] drop_constraint",
            "an EXCLUDE constraint is only added with its index built under ACCESS EXCLUSIVE",
            id="exclude_constraint",
        ),
    ],
)
def test_rollback_refuses_what_it_cannot_restore_exactly(
    setup: str | None, phases: str, step: str, why: str, base: Conn, dsn: str, tmp_path: Path
) -> None:
    conn = base
    if setup is not None:
        leave_invalid_index(conn, setup)
    else:
        conn.execute(
            "ALTER TABLE items ADD CONSTRAINT items_no_twin EXCLUDE USING btree (id WITH =)"
        )
    plan = write_plan(tmp_path / "plan.yaml", phases)
    out = api.run_plan(plan, dsn)
    assert out.status == "completed", out.message
    after = snapshot(conn)
    for undo in (api.rollback_dry_run, api.rollback):
        with pytest.raises(RunRefused) as refused:
            undo(plan, dsn)
        message = str(refused.value)
        assert f"cannot roll back past step {step}" in message, message
        assert why in message and "nothing was undone" in message
    assert snapshot(conn) == after
