"""The core install (no `zdm[lint]`): plans lint, SQL and convert say which extra to install.

The CLI runs in a real subprocess whose `import pglast` fails (a sitecustomize module on
PYTHONPATH puts a finder first on sys.meta_path), as it does after `pip install zdm`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from zdm_helpers import module_hider

HINT = "pip install 'zdm[lint]'"

PLAN = """\
version: 1
name: add_phone
phases:
  additive:
    - add_column: {table: users, column: {name: phone, type: text}}
  cleanup:
    - set_not_null: {table: users, column: phone}
"""

CLEAN_PLAN = """\
version: 1
name: add_phone
phases:
  additive:
    - add_column: {table: users, column: {name: phone, type: text}}
"""

SQL_STEP_PLAN = """\
version: 1
name: with_sql
phases:
  additive:
    - sql:
        tables: [users]
        up: CREATE INDEX users_email_idx ON users (email);
"""

Zdm = Callable[..., subprocess.CompletedProcess[str]]

SQL = "SET lock_timeout = '2s';\nCREATE INDEX users_email_idx ON users (email);\n"


@pytest.fixture
def zdm(tmp_path: Path) -> Zdm:
    shim = module_hider(tmp_path, "pglast")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), *sys.path])}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zdm", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    probe = subprocess.run(
        [sys.executable, "-c", "import pglast"], env=env, capture_output=True, text=True
    )
    assert probe.returncode == 1 and "No module named 'pglast'" in probe.stderr
    return run


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def test_plan_lint_works_without_pglast(zdm: Zdm, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(PLAN)
    (tmp_path / "good.yaml").write_text(CLEAN_PLAN)
    result = zdm("lint", "bad.yaml")
    _no_traceback(result)
    assert result.returncode == 1
    assert "bad.yaml:" in result.stdout and "[set-not-null-unfilled]" in result.stdout
    result = zdm("lint", "good.yaml")
    _no_traceback(result)
    assert (result.returncode, result.stdout) == (0, "")
    assert "no problems in 1 file" in result.stderr


def test_sql_lint_exits_2_with_one_line_naming_the_extra(zdm: Zdm, tmp_path: Path) -> None:
    (tmp_path / "V1__idx.sql").write_text(SQL)
    result = zdm("lint", "V1__idx.sql")
    _no_traceback(result)
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("V1__idx.sql: ") and HINT in lines[0]
    # A directory of SQL files: still one line, counting them.
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "V1__a.sql").write_text(SQL)
    (tmp_path / "m" / "V2__b.sql").write_text(SQL)
    result = zdm("lint", "m")
    _no_traceback(result)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"2 .sql files: not checked: checking SQL needs PostgreSQL's parser, which comes with "
        f"the optional 'lint' extra: {HINT}"
    ]


def test_plans_and_sql_together_lint_the_plans_and_name_the_extra(zdm: Zdm, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(PLAN)
    (tmp_path / "V1__idx.sql").write_text(SQL)
    (tmp_path / "sqlstep.yaml").write_text(SQL_STEP_PLAN)
    result = zdm("lint", "bad.yaml", "V1__idx.sql", "sqlstep.yaml")
    _no_traceback(result)
    assert result.returncode == 2
    assert "[set-not-null-unfilled]" in result.stdout
    assert "V1__idx.sql: not checked: " in result.stderr and HINT in result.stderr
    assert "sqlstep.yaml: the sql steps were not checked" in result.stderr


def test_convert_exits_2_with_one_line_naming_the_extra(zdm: Zdm, tmp_path: Path) -> None:
    (tmp_path / "V1__idx.sql").write_text(SQL)
    result = zdm("convert", "V1__idx.sql", "-o", "plan.yaml")
    _no_traceback(result)
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("zdm convert: ") and HINT in lines[0]
    assert not (tmp_path / "plan.yaml").exists()


def test_other_commands_do_not_need_pglast(zdm: Zdm, tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(CLEAN_PLAN)
    result = zdm("validate", "good.yaml")
    _no_traceback(result)
    assert result.returncode == 0 and "ok" in result.stderr
    result = zdm("schema")
    assert result.returncode == 0 and '"phases"' in result.stdout
    result = zdm("--help")
    assert result.returncode == 0 and "lint" in result.stdout


def test_convert_of_pgroll_migrations_needs_no_pglast(zdm: Zdm, tmp_path: Path) -> None:
    (tmp_path / "01_fruits.json").write_text(
        '{"operations": [{"create_table": {"name": "fruits", "columns": '
        '[{"name": "id", "type": "serial", "pk": true}]}}]}'
    )
    result = zdm("convert", "01_fruits.json")
    _no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "create_table:" in result.stdout and "table: fruits" in result.stdout
    result = zdm("convert", ".", "-o", "out")
    _no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "01_fruits.yaml").exists()
