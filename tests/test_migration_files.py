"""Migration file names: one parser for `zdm migrate` and `zdm lint`, case-insensitive."""

from __future__ import annotations

from pathlib import Path

import pytest

from zdm.engine.migrate import scan
from zdm.lint.files import LintFile, migration_order
from zdm.plan.migration_files import find_undo, migration_name


@pytest.mark.parametrize(
    ("file", "prefix", "version", "description", "ext", "versioned", "undo"),
    [
        ("V001__add_phone.yaml", "V", "001", "add_phone", "yaml", True, False),
        ("v1_2__x.SQL", "V", "1_2", "x", "sql", True, False),
        ("V1.2__a.b.sql", "V", "1.2", "a.b", "sql", True, False),
        ("U001__undo.sql", "U", "001", "undo", "sql", False, True),
        ("r7__undo.sql", "R", "7", "undo", "sql", False, True),
        ("R__views.sql", "R", None, "views", "sql", False, False),
        ("20250108120000_add_phone.yml", "", "20250108120000", "add_phone", "yml", True, False),
        ("V001__notes.txt", "V", "001", "notes", "txt", False, False),
        ("V001__.sql", "V", "001", "", "sql", False, False),
    ],
)
def test_migration_name(
    file: str,
    prefix: str,
    version: str | None,
    description: str,
    ext: str,
    versioned: bool,
    undo: bool,
) -> None:
    name = migration_name(file)
    assert name is not None
    assert (name.prefix, name.version, name.description, name.ext) == (
        prefix,
        version,
        description,
        ext,
    )
    assert (name.versioned, name.undo) == (versioned, undo)


@pytest.mark.parametrize("file", ["users.sql", "Users__x.sql", "001__x.yaml", "plan.yaml"])
def test_other_names_are_no_migration(file: str) -> None:
    assert migration_name(file) is None


def test_migrate_and_lint_read_lower_case_prefixes_alike(tmp_path: Path) -> None:
    for name in ("v2__second.sql", "V1__first.sql", "u2__second.sql"):
        (tmp_path / name).write_text("SELECT 1;\n")
    assert [m.file for m in scan(tmp_path)] == ["V1__first.sql", "v2__second.sql"]
    assert find_undo(tmp_path / "v2__second.sql") == (tmp_path / "u2__second.sql").resolve()
    ordered = sorted(tmp_path.iterdir(), key=lambda p: migration_order(p, tmp_path))
    assert [p.name for p in ordered] == ["V1__first.sql", "v2__second.sql", "u2__second.sql"]
    assert LintFile(tmp_path / "u2__second.sql", False).undo
