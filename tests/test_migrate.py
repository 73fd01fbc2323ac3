"""`zdm migrate` and `zdm history`: a directory of plans applied in version order, with checksums.

Covered: numeric version order (V10 after V2), timestamped names, skipping applied plans,
refusing changed applied files (exit 2, the file named) unless --force, out-of-order files,
gates and failures stopping the walk with their exit codes, Flyway `V001__*.sql` files adopted
with their `R001__*.sql` undo files, rollback of a migrated plan, the migrate lock, dry-run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from zdm import api
from zdm.cli import app
from zdm.engine.migrate import MIGRATE_LOCK, MigrationsRefused, scan, version_key
from zdm.logs import configure
from zdm.state import LockHeld, PlanLock


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def _plan(*steps: str, gates: str = "[]", phase: str = "additive") -> str:
    body = "\n".join(f"    - {step}" for step in steps)
    return f"version: 1\ngates: {gates}\nphases:\n  {phase}:\n{body}\n"


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> Iterator[None]:
    """structlog writes to the stderr of the moment it is configured: CliRunner's is closed
    after each invocation, so library calls between invocations need a live one again."""
    configure()
    yield
    configure()


def _zdm(*args: str | Path) -> Any:
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        configure()


def _value(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _history(dsn: str, directory: Path | None = None) -> list[tuple[str, str]]:
    return [(r.file, r.status) for r in api.history(dsn, directory)]


AUTHORS = _plan(
    "create_table: {table: authors, columns: [{name: id, type: bigint, primary_key: true}]}"
)
BOOKS = _plan(
    "create_table: {table: books, columns: [{name: id, type: bigint, primary_key: true},"
    " {name: author_id, type: bigint, references: {table: authors}}]}"
)
ISBN = _plan("add_column: {table: books, column: {name: isbn, type: text}}")


def test_versions_sort_as_numbers(tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "m",
        {"V10__c.yaml": ISBN, "V2__b.yaml": BOOKS, "V1__a.yaml": AUTHORS, "README.md": "x"},
    )
    assert [m.file for m in scan(directory)] == ["V1__a.yaml", "V2__b.yaml", "V10__c.yaml"]
    assert version_key("1_2") == version_key("1.2") == (1, 2)
    _write(directory, {"V002__dup.yaml": AUTHORS})
    with pytest.raises(MigrationsRefused, match=r"V002__dup.yaml and V2__b.yaml have the same"):
        scan(directory)


def test_migrate_in_order_skip_applied_and_history(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # V10 needs V2's table and V2 needs V1's: a text sort (V10 < V2) would fail.
    directory = _write(
        tmp_path / "m",
        {"V10__isbn.yaml": ISBN, "V2__books.yaml": BOOKS, "V1__authors.yaml": AUTHORS},
    )
    result = _zdm("migrate", directory, "--dsn", dsn)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.index("V1__authors") < result.stderr.index("V2__books")
    assert result.stderr.index("V2__books") < result.stderr.index("V10__isbn")
    assert _value(conn, "SELECT count(*) FROM zdm.migrations") == 3
    runs = conn.execute("SELECT file, run_id FROM zdm.migrations ORDER BY run_id").fetchall()
    assert [r[0] for r in runs] == ["V1__authors.yaml", "V2__books.yaml", "V10__isbn.yaml"]

    # Applied ones are skipped; a new file is applied.
    _write(
        directory,
        {"V11__title.yaml": _plan("add_column: {table: books, column: {name: title, type: text}}")},
    )
    outcome = api.migrate(directory, dsn)
    assert outcome.applied == ("V11__title.yaml",)
    assert _value(conn, "SELECT count(*) FROM zdm.runs") == 4

    result = _zdm("history", "--dsn", dsn, "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [(r["version"], r["status"]) for r in rows] == [
        ("1", "applied"),
        ("2", "applied"),
        ("10", "applied"),
        ("11", "applied"),
    ]
    assert rows[0]["sha256"] == scan(directory)[0].sha256
    text = _zdm("history", directory, "--dsn", dsn).stdout
    assert "V10__isbn.yaml" in text and "applied" in text


def test_timestamped_names(dsn: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "m",
        {"20250108120000_books.yaml": BOOKS, "20250107090000_authors.yaml": AUTHORS},
    )
    assert api.migrate(directory, dsn).applied == (
        "20250107090000_authors.yaml",
        "20250108120000_books.yaml",
    )
    assert _history(dsn) == [
        ("20250107090000_authors.yaml", "applied"),
        ("20250108120000_books.yaml", "applied"),
    ]


def test_changed_file_is_refused_unless_force(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    directory = _write(tmp_path / "m", {"V1__authors.yaml": AUTHORS, "V2__books.yaml": BOOKS})
    assert api.migrate(directory, dsn).status == "completed"
    (directory / "V1__authors.yaml").write_text("# edited after it ran\n" + AUTHORS)
    _write(directory, {"V3__isbn.yaml": ISBN})

    result = _zdm("migrate", directory, "--dsn", dsn)
    assert result.exit_code == 2
    assert "applied migrations changed since they ran" in result.stderr
    assert str(directory / "V1__authors.yaml") in result.stderr.replace("\n", "")
    assert _value(conn, "SELECT to_regclass('books') IS NOT NULL") is True
    assert _value(conn, "SELECT count(*) FROM pg_attribute WHERE attname = 'isbn'") == 0
    assert _zdm("history", directory, "--dsn", dsn).stdout.count("file changed since applied") == 1

    result = _zdm("migrate", directory, "--dsn", dsn, "--force")
    assert result.exit_code == 0, result.stderr
    assert "applied V3__isbn.yaml" in result.stderr
    # The file as it is now was accepted: no --force needed any more.
    assert api.migrate(directory, dsn).status == "completed"


def test_gate_and_failure_stop_the_walk(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    gated = _plan("drop_column: {table: books, column: isbn}", gates="[cleanup]", phase="cleanup")
    failing = _plan("verify: {sql: SELECT count(*) FROM books, expect: 1}", phase="dual_read")
    directory = _write(
        tmp_path / "m",
        {
            "V1__authors.yaml": AUTHORS,
            "V2__books.yaml": BOOKS,
            "V3__isbn.yaml": ISBN,
            "V4__drop_isbn.yaml": gated,
            "V5__one_book.yaml": failing,
        },
    )
    result = _zdm("migrate", directory, "--dsn", dsn)
    assert result.exit_code == 0, result.stderr
    assert "waiting" in result.stderr and "V4__drop_isbn.yaml" in result.stderr
    assert "--continue" in result.stderr
    assert _history(dsn, directory)[3:] == [
        ("V4__drop_isbn.yaml", "waiting"),
        ("V5__one_book.yaml", "pending"),
    ]
    # The waiting run says what it waits for.
    status = _zdm("status", directory / "V4__drop_isbn.yaml", "--dsn", dsn).stdout
    assert "waiting (gate before cleanup)" in status

    result = _zdm("migrate", directory, "--dsn", dsn, "--continue")
    assert result.exit_code == 1
    assert "V5__one_book.yaml" in result.stderr and "expected 1, got 0" in result.stderr
    assert _value(conn, "SELECT count(*) FROM pg_attribute WHERE attname = 'isbn'") == 0
    assert _history(dsn, directory)[3:] == [
        ("V4__drop_isbn.yaml", "applied"),
        ("V5__one_book.yaml", "failed"),
    ]
    conn.execute("INSERT INTO authors VALUES (1); INSERT INTO books VALUES (1, 1)")
    assert _zdm("migrate", directory, "--dsn", dsn).exit_code == 0
    assert _history(dsn)[-1] == ("V5__one_book.yaml", "applied")


def test_invalid_plan_applies_nothing(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    directory = _write(
        tmp_path / "m",
        {
            "V1__authors.yaml": AUTHORS,
            "V2__bad.yaml": _plan("drop_colum: {}"),
            "V3__worse.yaml": "version: 2\nphases: {}\n",
        },
    )
    result = _zdm("migrate", directory, "--dsn", dsn)
    assert result.exit_code == 2
    # Every broken file is named at once.
    assert "V2__bad.yaml" in result.stderr and "unknown step kind 'drop_colum'" in result.stderr
    assert "V3__worse.yaml" in result.stderr
    assert _value(conn, "SELECT to_regclass('authors') IS NULL") is True


def test_another_migrate_holds_the_lock(dsn: str, tmp_path: Path) -> None:
    directory = _write(tmp_path / "m", {"V1__authors.yaml": AUTHORS})
    with psycopg.connect(dsn, autocommit=True) as holder:
        PlanLock(holder, MIGRATE_LOCK).acquire()
        with pytest.raises(LockHeld):
            api.migrate(directory, dsn)
        assert _zdm("migrate", directory, "--dsn", dsn).exit_code == 3
    assert api.migrate(directory, dsn).applied == ("V1__authors.yaml",)


def test_dry_run_writes_nothing(dsn: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    directory = _write(tmp_path / "m", {"V1__authors.yaml": AUTHORS, "V2__books.yaml": BOOKS})
    result = _zdm("migrate", directory, "--dsn", dsn, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "2 migrations, 2 to apply" in result.stdout
    assert 'CREATE TABLE "public"."books"' in result.stdout
    assert _value(conn, "SELECT to_regnamespace('zdm') IS NULL") is True
    api.migrate(directory, dsn)
    text = api.migrate_dry_run(directory, dsn)
    assert "0 to apply" in text and "-- V2__books.yaml: applied" in text


# --- rollback of migrated plans ------------------------------------------------------------


def test_rollback_of_a_migrated_plan(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    directory = _write(
        tmp_path / "m",
        {"V1__authors.yaml": AUTHORS, "V2__books.yaml": BOOKS, "V3__isbn.yaml": ISBN},
    )
    assert api.migrate(directory, dsn).status == "completed"

    result = _zdm("rollback", directory / "V3__isbn.yaml", "--dsn", dsn)
    assert result.exit_code == 0, result.stderr
    assert _value(conn, "SELECT count(*) FROM pg_attribute WHERE attname = 'isbn'") == 0
    assert _history(dsn)[-1] == ("V3__isbn.yaml", "rolled_back")
    # A rolled-back migration is pending again: migrate re-applies it.
    assert api.migrate(directory, dsn).applied == ("V3__isbn.yaml",)
    assert _history(dsn)[-1] == ("V3__isbn.yaml", "applied")

    # Rolling back one under an applied one leaves a gap that migrate fills only with --force.
    assert api.rollback(directory / "V2__books.yaml", dsn).status == "rolled_back"
    result = _zdm("migrate", directory, "--dsn", dsn)
    assert result.exit_code == 2
    assert "V2__books.yaml was never applied but is older" in result.stderr.replace("\n", "")
    # (V3 added a column to books, which V2's rollback dropped: re-apply V2 then V3's column.)
    assert _zdm("migrate", directory, "--dsn", dsn, "--force").exit_code == 0
    assert _value(conn, "SELECT to_regclass('books') IS NOT NULL") is True


# --- Flyway-style .sql files -------------------------------------------------------------

# As the seed document writes them: a header comment, BEGIN; … COMMIT;, rollbacks in a sibling
# `rollback/` directory named R<version>__*.sql.
V001 = """/*
 * Migration: Create users table
 * Rollback: R001__rollback_users_table.sql
 */
BEGIN;
CREATE TABLE users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email VARCHAR(255) NOT NULL
);
CREATE UNIQUE INDEX idx_users_email_unique ON users(email);
COMMIT;
"""
V002 = """BEGIN;
CREATE TABLE posts (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE
);
COMMIT;
"""
V003 = "CREATE INDEX idx_posts_user_id ON posts(user_id);\n"
R001 = """BEGIN;
DROP INDEX IF EXISTS idx_users_email_unique;
DROP TABLE IF EXISTS users CASCADE;
COMMIT;
"""
U002 = "DROP TABLE IF EXISTS posts CASCADE;\n"


def test_flyway_sql_files_with_undo(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    migrations = _write(
        tmp_path / "database" / "migrations",
        {
            "V001__create_users_table.sql": V001,
            "V002__create_posts_table.sql": V002,
            "V003__add_posts_index.sql": V003,
            "U002__drop_posts_table.sql": U002,
        },
    )
    _write(tmp_path / "database" / "rollback", {"R001__rollback_users_table.sql": R001})
    assert [m.undo.name if m.undo else None for m in scan(migrations)] == [
        "R001__rollback_users_table.sql",
        "U002__drop_posts_table.sql",
        None,
    ]
    result = _zdm("migrate", migrations, "--dsn", dsn)
    assert result.exit_code == 0, result.stderr
    assert _value(conn, "SELECT to_regclass('public.idx_posts_user_id') IS NOT NULL") is True
    # The file's own BEGIN/COMMIT was taken off: the step and its bookkeeping committed together.
    steps = conn.execute("SELECT status, attempts FROM zdm.steps ORDER BY run_id").fetchall()
    assert steps == [("done", 1)] * 3
    assert [r.plan for r in api.history(dsn)] == [
        "V001__create_users_table",
        "V002__create_posts_table",
        "V003__add_posts_index",
    ]
    assert "V001__create_users_table.sql" in api.dry_run(
        migrations / "V001__create_users_table.sql", None
    )

    # A file without an undo file cannot be rolled back; the others use theirs.
    result = _zdm("rollback", migrations / "V003__add_posts_index.sql", "--dsn", dsn)
    assert result.exit_code == 2 and "has no down" in result.stderr
    conn.execute("DROP INDEX idx_posts_user_id")
    conn.execute("UPDATE zdm.runs SET status = 'rolled_back' WHERE plan = 'V003__add_posts_index'")
    result = _zdm("rollback", migrations / "V002__create_posts_table.sql", "--dsn", dsn)
    assert result.exit_code == 0, result.stderr
    assert _value(conn, "SELECT to_regclass('posts') IS NULL") is True
    assert api.rollback(migrations / "V001__create_users_table.sql", dsn).status == "rolled_back"
    assert _value(conn, "SELECT to_regclass('users') IS NULL") is True
    assert _history(dsn) == [
        ("V001__create_users_table.sql", "rolled_back"),
        ("V002__create_posts_table.sql", "rolled_back"),
        ("V003__add_posts_index.sql", "rolled_back"),
    ]
    # And migrate applies them all again.
    assert len(api.migrate(migrations, dsn).applied) == 3
    assert _value(conn, "SELECT to_regclass('public.idx_posts_user_id') IS NOT NULL") is True
