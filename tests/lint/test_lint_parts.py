"""The linter's parts: type changes, positions, suppressions, transactions, plan positions."""

from __future__ import annotations

from pathlib import Path

import pytest
from lint_support import lint_migration, lint_plan_text

from zdm.lint.context import Wrap, assign_transactions
from zdm.lint.source import parse_source, suppressed_rules
from zdm.lint.types import Rewrite, TypeRef, type_change


def t(name: str, *mods: int, array: bool = False) -> TypeRef:
    return TypeRef(name, mods, array)


@pytest.mark.parametrize(
    ("old", "new", "verdict"),
    [
        (t("varchar", 20), t("varchar", 40), Rewrite.NO),
        (t("varchar", 40), t("varchar", 20), Rewrite.YES),
        (t("varchar", 40), t("varchar"), Rewrite.NO),
        (t("varchar"), t("varchar", 40), Rewrite.YES),
        (t("varchar", 40), t("text"), Rewrite.NO),
        (t("text"), t("varchar"), Rewrite.NO),
        (t("numeric", 10, 2), t("numeric", 12, 2), Rewrite.NO),
        (t("numeric", 10, 2), t("numeric", 12, 3), Rewrite.YES),
        (t("numeric", 10, 2), t("numeric", 8, 2), Rewrite.YES),
        (t("numeric", 10, 2), t("numeric"), Rewrite.NO),
        (t("numeric"), t("numeric", 10, 2), Rewrite.YES),
        (t("cidr"), t("inet"), Rewrite.NO),
        (t("inet"), t("cidr"), Rewrite.YES),
        (t("varbit", 8), t("varbit", 16), Rewrite.NO),
        (t("timestamp", 3), t("timestamp", 6), Rewrite.NO),
        (t("timestamp"), t("timestamptz"), Rewrite.ONLY_IN_UTC),
        (t("timestamptz"), t("timestamp"), Rewrite.ONLY_IN_UTC),
        (t("int4"), t("int8"), Rewrite.YES),
        (t("json"), t("jsonb"), Rewrite.YES),
        (t("varchar", 10, array=True), t("varchar", 20, array=True), Rewrite.YES),
        (t("int8"), t("int8"), Rewrite.NO),
    ],
)
def test_type_change(old: TypeRef, new: TypeRef, verdict: Rewrite) -> None:
    assert type_change(old, new) is verdict


def test_positions_count_characters_not_bytes() -> None:
    source = parse_source("-- é\nSELECT 'ü';\n  CREATE INDEX i ON t (a);")
    assert [source.position(s.start) for s in source.statements] == [(2, 1), (3, 3)]


def test_suppression_comment_forms() -> None:
    assert suppressed_rules("-- zdm-lint: ignore a-b, c  (why)") == {"a-b", "c"}
    assert suppressed_rules("/* zdm-lint: ignore x */") == {"x"}
    assert suppressed_rules("-- zdm-lint ignore x") == set()
    source = parse_source(
        "ALTER TABLE t\n  -- zdm-lint: ignore inside\n  ADD COLUMN a int;\n"
        "SELECT 1; /* zdm-lint: ignore trailing */\n"
        "-- zdm-lint: ignore next\n\nSELECT 2;"
    )
    assert [s.suppressed for s in source.statements] == [{"inside"}, {"trailing"}, {"next"}]


def test_transactions_of_a_file() -> None:
    text = "SELECT 1;\nBEGIN;\nSELECT 2;\nSELECT 3;\nCOMMIT;\nSELECT 4;"
    txns = assign_transactions(parse_source(text), Wrap.FILE)
    assert [(x.explicit, x.line) if x else None for x in txns] == [
        None,
        None,
        (True, 2),
        (True, 2),
        None,
        None,
    ]
    whole = assign_transactions(parse_source("SELECT 1; SELECT 2;"), Wrap.FILE)
    assert whole[0] is not None and whole[0] is whole[1] and not whole[0].explicit
    assert assign_transactions(parse_source("SELECT 1;"), Wrap.FILE) == [None]
    assert assign_transactions(parse_source("SELECT 1;"), Wrap.ALWAYS)[0] is not None
    assert assign_transactions(parse_source("SELECT 1; SELECT 2;"), Wrap.NONE) == [None, None]


def test_long_identifiers_are_read_before_truncation(tmp_path: Path) -> None:
    name = "x" * 64
    findings = lint_migration(tmp_path, f'CREATE TABLE t ("{name}" int, {name.upper()}y int);')
    assert [(f.rule, f.column) for f in findings] == [
        ("identifier-too-long", 17),
        ("identifier-too-long", 89),
    ]


def test_history_carries_column_types_across_files(tmp_path: Path) -> None:
    history = "CREATE TABLE u (a varchar(10));\nALTER TABLE u RENAME COLUMN a TO b;"
    sql = "SET lock_timeout = '1s';\nALTER TABLE u ALTER COLUMN b TYPE varchar(20);"
    assert lint_migration(tmp_path, sql, history) == []
    findings = lint_migration(tmp_path, sql)
    assert [(f.rule, f.severity.value) for f in findings] == [("column-type-rewrite", "warning")]


def test_unknown_function_default_is_a_warning(tmp_path: Path) -> None:
    findings = lint_migration(
        tmp_path, "SET lock_timeout = '1s';\nALTER TABLE u ADD COLUMN s int DEFAULT pick_shard();"
    )
    assert [(f.rule, f.severity.value, f.line, f.column) for f in findings] == [
        ("volatile-default", "warning", 2, 26)
    ]


UNDECLARED = "sql-tables-undeclared"


def test_sql_steps_name_the_tables_they_lock(tmp_path: Path) -> None:
    plan = (
        "version: 1\nphases:\n  additive:\n"
        "    - sql: {up: 'ALTER TABLE users ADD a int; ALTER TABLE s.items ADD b int'}\n"
        "    - sql: {up: 'ALTER TABLE users ADD c int', tables: [public.users]}\n"
        "    - sql: {up: 'CREATE INDEX CONCURRENTLY i ON users (a)', transactional: false,"
        " lock: SHARE UPDATE EXCLUSIVE}\n"
    )
    findings = [f for f in lint_plan_text(tmp_path, plan) if f.rule == UNDECLARED]
    assert [(f.line, f.fix) for f in findings] == [(4, "add tables: [s.items, users]")]


def test_sql_step_positions_in_the_yaml(tmp_path: Path) -> None:
    plan = (
        "version: 1\nphases:\n  additive:\n"
        "    - sql: {up: 'CREATE INDEX i ON users (a)'}\n"
        "    - sql:\n        transactional: false\n"
        '        up: "DROP INDEX j"\n'
        "  cleanup:\n    - sql:\n        up: |\n\n          SELECT 1;\n"
        "            ALTER TABLE users DROP COLUMN a;\n"
        "          ALTER TABLE users RENAME COLUMN b TO c;\n"
    )
    findings = [f for f in lint_plan_text(tmp_path, plan) if f.rule != UNDECLARED]
    assert [(f.rule, f.line, f.column) for f in findings] == [
        ("index-not-concurrent", 4, 18),
        ("index-not-concurrent", 7, 14),
    ]
    destructive = plan.replace("  cleanup:", "  dual_read:")
    findings = [f for f in lint_plan_text(tmp_path, destructive) if f.rule != UNDECLARED]
    assert [(f.rule, f.line, f.column) for f in findings][2:] == [
        ("drop-column", 13, 13),
        ("rename-column", 14, 11),
    ]


def test_sql_step_understating_its_lock(tmp_path: Path) -> None:
    plan = (
        "version: 1\nphases:\n  additive:\n    - sql:\n"
        "        up: ALTER TABLE users ALTER COLUMN a SET DEFAULT 1\n"
        "        lock: ROW EXCLUSIVE\n"
        "        tables: [users]\n"
    )
    findings = lint_plan_text(tmp_path, plan)
    assert [(f.rule, f.line) for f in findings] == [
        ("sql-lock-understated", 4),
        ("missing-lock-timeout", 5),
    ]


def test_tables_created_by_the_plan_are_new(tmp_path: Path) -> None:
    plan = (
        "version: 1\nphases:\n  additive:\n"
        "    - create_table: {table: events, columns: [{name: id, type: bigint}]}\n"
        "    - sql: {up: 'CREATE INDEX events_id ON events (id)'}\n"
    )
    assert lint_plan_text(tmp_path, plan) == []


def test_pg18_not_null_constraint_scans(tmp_path: Path) -> None:
    import pglast

    from zdm.lint.rules.set_not_null import PG18_BAD

    if int(pglast.__version__.lstrip("v").split(".")[0]) < 8:
        pytest.skip("PostgreSQL 18 syntax needs pglast 8")
    findings = lint_migration(tmp_path, "SET lock_timeout = '1s';\n" + PG18_BAD.sql)
    assert [f.rule for f in findings] == ["set-not-null-scan"]
