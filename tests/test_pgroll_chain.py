"""examples/pgroll: a chain of 70 plans covering every pgroll operation kind and option,
written with zdm's changes and steps (raw `sql` only where pgroll's own examples use it).

On a fresh database each plan runs to its last phase before cleanup, is rolled back (the
catalog and data must be exactly as before it), runs again and completes, gates continued.
Then the completed chain is rolled back newest first, each plan leaving the catalog as it was
before it ran, until the first plan whose completion destroyed data (a swapped-out column, a
dropped table), which rollback refuses, naming the step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).parent / "operations"))
from ops_support import snapshot

from zdm import api
from zdm.engine.refusals import RunRefused
from zdm.logs import configure

CHAIN = Path(__file__).resolve().parent.parent / "examples" / "pgroll"
PLANS = sorted(CHAIN.glob("*.yaml"))

PGROLL_KINDS = {
    "create_table",
    "add_column",
    "alter_column",
    "drop_column",
    "rename_table",
    "rename_column",
    "drop_table",
    "create_index",
    "drop_index",
    "rename_constraint",
    "drop_constraint",
    "set_replica_identity",
    "sql",
}


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> None:
    configure()


def _differences(now: dict[str, Any], then: dict[str, Any]) -> dict[str, Any]:
    """What differs between two snapshots, key by key (rows only in one of them)."""
    out: dict[str, Any] = {}
    for key in then:
        if now[key] != then[key]:
            if isinstance(then[key], list):
                out[key] = {
                    "now": [r for r in now[key] if r not in then[key]],
                    "before": [r for r in then[key] if r not in now[key]],
                }
            else:
                out[key] = {"now": now[key], "before": then[key]}
    return out


def _complete(path: Path, dsn: str) -> None:
    outcome = api.run_plan(path, dsn)
    if outcome.status == "waiting":
        outcome = api.run_plan(path, dsn, cont=True)
    assert outcome.status == "completed", f"{path.name}: {outcome.message}"


def test_the_chain_covers_every_pgroll_kind() -> None:
    assert len(PLANS) >= 40
    text = "\n".join(p.read_text() for p in PLANS)
    for kind in PGROLL_KINDS:
        assert f"{kind}:" in text, kind
    # create_constraint's kinds, and the options pgroll's create_table and create_index have.
    for option in (
        "add_unique:", "add_check:", "add_foreign_key:", "add_primary_key:", "type: exclude",
        "nulls_not_distinct:", "on_delete_set_columns:", "on_update:", "match_type:",
        "initially_deferred:", "no_inherit:", "sequence_options:", "expression:", "comment:",
        "collate:", "opclass:", "sort:", "nulls:", "storage_parameters:", "include_columns:",
        "method: hash", "where:", "unique: true", "version_schema:",
    ):  # fmt: skip
        assert option in text, option


def test_the_chain_runs_and_rolls_back_step_by_step(dsn: str) -> None:
    before: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for path in PLANS:
            before[path.name] = snapshot(conn)
            outcome = api.run_plan(path, dsn, until="dual_read")
            assert outcome.status in {"waiting", "completed"}, f"{path.name}: {outcome.message}"
            rolled = api.rollback(path, dsn)
            assert rolled.status == "rolled_back", f"{path.name}: {rolled.message}"
            differ = _differences(snapshot(conn), before[path.name])
            assert not differ, f"{path.name}: {differ}"
            _complete(path, dsn)

        undone = []
        for path in reversed(PLANS):
            try:
                outcome = api.rollback(path, dsn)
            except RunRefused as refused:
                assert "cannot roll back past step" in str(refused), str(refused)
                break
            assert outcome.status == "rolled_back", f"{path.name}: {outcome.message}"
            differ = _differences(snapshot(conn), before[path.name])
            assert not differ, f"{path.name}: {differ}"
            undone.append(path.name)
    assert len(undone) >= 20, undone


def test_set_type_refuses_a_change_that_would_rewrite(dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (c varchar(50), n int)")
        plan = tmp_path / "p.yaml"
        plan.write_text(
            "version: 1\nphases:\n  additive:\n    - set_type: {table: t, column: c, type: varchar(20)}\n"
        )
        outcome = api.run_plan(plan, dsn)
        assert outcome.status == "failed"
        assert (
            "column c is character varying(50): changing it to varchar(20) would rewrite the table"
            in outcome.message
        )
        assert conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                            "WHERE attrelid = 't'::regclass AND attname = 'c'").fetchone() == (
            "character varying(50)",
        )  # fmt: skip


def test_rich_definitions_with_mixed_case_names(dsn: str, tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(
        """\
version: 1
name: mixed
phases:
  additive:
    - create_table:
        table: Shop Items
        comment: "the shop's items"
        columns:
          - {name: Id, type: bigint, generated: {identity: {}}}
          - {name: Price, type: numeric, comment: in euros,
             check: {name: Price Positive, constraint: '"Price" > 0'}}
          - {name: Label, type: text}
        constraints:
          - {name: Shop Items PK, type: primary_key, columns: [Id]}
          - {name: One Label, type: unique, columns: [Label], index_parameters: {include_columns: [Price]}}
    - create_index:
        table: Shop Items
        name: Items By Label
        columns: [{column: Label, collate: C, sort: desc, nulls: last}]
"""
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = snapshot(conn)
        outcome = api.run_plan(plan, dsn)
        assert outcome.status == "completed", outcome.message
        names = conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = '\"Shop Items\"'::regclass"
            " ORDER BY 1"
        ).fetchall()
        assert [n for (n,) in names if not n.endswith("_not_null")] == [
            "One Label",
            "Price Positive",
            "Shop Items PK",
        ]
        index = conn.execute(
            "SELECT pg_get_indexdef('public.\"Items By Label\"'::regclass)"
        ).fetchone()
        assert index is not None and index[0].endswith(
            'USING btree ("Label" COLLATE "C" DESC NULLS LAST)'
        )
        comments = conn.execute(
            "SELECT obj_description('\"Shop Items\"'::regclass),"
            " col_description('\"Shop Items\"'::regclass, 2)"
        ).fetchone()
        assert comments == ("the shop's items", "in euros")
        assert api.rollback(plan, dsn).status == "rolled_back"
        assert not _differences(snapshot(conn), before)
