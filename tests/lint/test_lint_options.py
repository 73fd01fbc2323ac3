"""`zdm lint` the way squawk users expect: --exclude, stdin, --[no-]assume-in-transaction,
--pg-version, a config file, SARIF, and --dsn against a live schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from zdm.cli import app

runner = CliRunner()

LT = "SET lock_timeout = '2s';\n"
INDEX = LT + "CREATE INDEX users_email_idx ON users (email);\n"


def lint(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["lint", *args], input=stdin)
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def rules(out: str) -> list[str]:
    return [f["rule"] for f in json.loads(out)]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in its own directory, so no configuration file of the project applies."""
    monkeypatch.chdir(tmp_path)


def test_exclude_drops_the_rule_and_a_typo_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("CREATE INDEX users_email_idx ON users (email);\n")
    code, out, _ = lint("--format", "json", "a.sql")
    assert code == 1 and sorted(rules(out)) == ["index-not-concurrent", "missing-lock-timeout"]
    code, out, _ = lint("--format", "json", "--exclude", "missing-lock-timeout", "a.sql")
    assert code == 1 and rules(out) == ["index-not-concurrent"]
    code, out, _ = lint(
        "--format", "json", "-e", "missing-lock-timeout,index-not-concurrent", "a.sql"
    )
    assert (code, rules(out)) == (0, [])
    code, _, err = lint("--exclude", "index-not-concurent", "a.sql")
    assert code == 2 and "--exclude: unknown rule 'index-not-concurent'" in err


def test_sql_from_stdin(tmp_path: Path) -> None:
    code, out, err = lint("-", stdin=INDEX)
    assert code == 1
    assert out.startswith("<stdin>:2:1: error [index-not-concurrent]")
    code, out, _ = lint("-", stdin=LT + "CREATE INDEX CONCURRENTLY i ON users (email);\n")
    assert (code, out) == (0, "")
    code, _, err = lint("-", stdin="ALTER TABLE;\n")
    assert code == 2 and "<stdin>:1:12: cannot parse the SQL" in err


CONCURRENTLY = LT + "SET statement_timeout = 0;\nCREATE INDEX CONCURRENTLY i ON users (email);\n"
TWO = LT + "ALTER TABLE users ADD COLUMN a int;\nCREATE INDEX CONCURRENTLY i ON users (a);\n"


def test_set_statements_do_not_make_a_file_one_transaction(tmp_path: Path) -> None:
    """The false alarm: CREATE INDEX CONCURRENTLY after SETs in a Flyway file."""
    (tmp_path / "V1__idx.sql").write_text(CONCURRENTLY)
    assert lint("V1__idx.sql")[:2] == (0, "")
    # A file of two real statements still runs in one transaction by default...
    (tmp_path / "V2__two.sql").write_text(TWO)
    code, out, _ = lint("V2__two.sql")
    assert code == 1 and "[concurrently-in-transaction]" in out


def test_assume_in_transaction_flags(tmp_path: Path) -> None:
    (tmp_path / "V1__idx.sql").write_text(CONCURRENTLY)
    (tmp_path / "V2__two.sql").write_text(TWO)
    code, out, _ = lint("--assume-in-transaction", "V1__idx.sql")
    assert code == 1 and "[concurrently-in-transaction]" in out
    assert lint("--no-assume-in-transaction", "V2__two.sql")[:2] == (0, "")
    # stdin runs as written unless told otherwise; explicit BEGIN/COMMIT are always honoured
    assert lint("-", stdin=TWO)[0] == 0
    assert "[concurrently-in-transaction]" in lint("--assume-in-transaction", "-", stdin=TWO)[1]
    wrapped = "BEGIN;\n" + TWO + "COMMIT;\n"
    assert "[concurrently-in-transaction]" in lint("-", stdin=wrapped)[1]


def test_pg_version_before_11_reports_any_default(tmp_path: Path) -> None:
    sql = LT + "ALTER TABLE users ADD COLUMN status text DEFAULT 'new';\n"
    assert lint("-", stdin=sql)[:2] == (0, "")
    code, out, _ = lint("--pg-version", "10", "-", stdin=sql)
    assert code == 1 and "[volatile-default]" in out and "before PostgreSQL 11" in out


def test_config_in_pyproject_and_zdm_toml(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("CREATE INDEX users_email_idx ON users (email);\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n[tool.zdm.lint]\nexclude = ["missing-lock-timeout"]\n'
        'format = "json"\n'
    )
    code, out, _ = lint("a.sql")
    assert code == 1 and rules(out) == ["index-not-concurrent"]
    # options add to / override the file
    assert lint("--exclude", "index-not-concurrent", "a.sql")[:2] == (0, "[]\n")
    assert lint("--format", "text", "a.sql")[1].startswith("a.sql:1:1: error")
    # .zdm.toml in the same directory wins, and the nearest file is found from a subdirectory
    (tmp_path / ".zdm.toml").write_text("[lint]\nassume-in-transaction = true\n")
    (tmp_path / "V1__idx.sql").write_text(CONCURRENTLY)
    assert "[concurrently-in-transaction]" in lint("V1__idx.sql")[1]
    (tmp_path / ".zdm.toml").write_text("[lint]\nexclude = 'x'\n")
    code, _, err = lint("a.sql")
    assert code == 2 and ".zdm.toml: [lint]: exclude must be a list of rule names" in err
    (tmp_path / ".zdm.toml").write_text("[lint]\nexlude = []\n")
    code, _, err = lint("a.sql")
    assert code == 2 and "unknown key 'exlude'" in err


def test_sarif_output(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text(INDEX)
    code, out, _ = lint("--format", "sarif", "a.sql")
    assert code == 1
    log = json.loads(out)
    assert log["version"] == "2.1.0"
    (run,) = log["runs"]
    assert run["tool"]["driver"]["name"] == "zdm lint"
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["index-not-concurrent"]
    (result,) = run["results"]
    assert result["ruleId"] == "index-not-concurrent" and result["level"] == "error"
    location = result["locations"][0]["physicalLocation"]
    assert location == {
        "artifactLocation": {"uri": "a.sql"},
        "region": {"startLine": 2, "startColumn": 1},
    }
    empty = json.loads(lint("--format", "sarif", "-", stdin=LT)[1])
    assert empty["runs"][0]["results"] == []


# --- --dsn ---------------------------------------------------------------------------------

WIDEN = LT + "ALTER TABLE users ALTER COLUMN email TYPE varchar(500);\n"


@pytest.fixture
def live(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        'CREATE TABLE users (id int PRIMARY KEY, email varchar(255), n int, "Note" varchar(10))'
    )
    conn.execute("INSERT INTO users SELECT g, 'u' || g, g FROM generate_series(1, 100) g")
    conn.execute("CREATE TABLE big (id int PRIMARY KEY, email varchar(255))")
    conn.execute("INSERT INTO big SELECT g, 'b' || g FROM generate_series(1, 30000) g")
    conn.execute("ANALYZE users")
    conn.execute("ANALYZE big")


def test_dsn_widening_a_varchar_is_clean_and_without_dsn_still_warns(live: None, dsn: str) -> None:
    code, out, _ = lint("-", stdin=WIDEN)
    assert code == 1 and "warning [column-type-rewrite]" in out
    assert lint("--dsn", dsn, "-", stdin=WIDEN)[:2] == (0, "")
    to_text = (
        LT + 'ALTER TABLE users ALTER COLUMN email TYPE text, ALTER COLUMN "Note" TYPE text;\n'
    )
    assert lint("--dsn", dsn, "-", stdin=to_text)[:2] == (0, "")
    # a type change that does rewrite is still reported, from the column's actual type
    narrow = LT + "ALTER TABLE big ALTER COLUMN email TYPE varchar(50);\n"
    code, out, _ = lint("--dsn", dsn, "-", stdin=narrow)
    assert code == 1 and "error [column-type-rewrite]" in out


def test_dsn_blocking_statement_on_a_small_table_is_a_note(live: None, dsn: str) -> None:
    sql = INDEX + "CREATE INDEX big_email_idx ON big (email);\n"
    code, out, err = lint("--dsn", dsn, "--format", "json", "-", stdin=sql)
    found = {(f["rule"], f["line"]): f["severity"] for f in json.loads(out)}
    assert found == {("index-not-concurrent", 2): "note", ("index-not-concurrent", 3): "error"}
    assert code == 1
    code, out, err = lint("--dsn", dsn, "-", stdin=INDEX)
    assert code == 0 and "note [index-not-concurrent]" in out and "users ~100 rows" in out
    assert "1 note" in err
    # every rule whose harm is how long a scan holds the lock, the validating CHECK and FK too
    validating = LT + (
        "ALTER TABLE users ADD CONSTRAINT n_positive CHECK (n > 0);\n"
        "ALTER TABLE users ADD CONSTRAINT n_big FOREIGN KEY (n) REFERENCES big (id);\n"
        "ALTER TABLE users SET UNLOGGED;\n"
    )
    code, out, _ = lint("--dsn", dsn, "--format", "json", "-", stdin=validating)
    found = {(f["rule"], f["severity"]) for f in json.loads(out)}
    assert ("check-without-not-valid", "note") in found, found
    assert ("table-rewrite", "note") in found, found
    # the FK also holds SHARE ROW EXCLUSIVE on big, which is not small: it stays an error
    assert ("foreign-key-without-not-valid", "error") in found, found
    # lock queueing does not depend on size: a missing lock_timeout keeps its severity
    code, out, _ = lint("--dsn", dsn, "-", stdin="ALTER TABLE users ADD COLUMN x int;\n")
    assert code == 1 and "warning [missing-lock-timeout]" in out


def test_the_size_bound_rules_are_rules() -> None:
    from zdm.lint.live import SIZE_BOUND_RULES
    from zdm.lint.rules import RULES_BY_ID

    assert SIZE_BOUND_RULES.issubset(RULES_BY_ID)


def test_dsn_that_cannot_connect_exits_2() -> None:
    code, out, err = lint("--dsn", "postgresql://nobody@127.0.0.1:1/none", "-", stdin=WIDEN)
    assert (code, out) == (2, "")
    assert "zdm lint: --dsn: cannot connect" in err


def test_pre_commit_hooks_run_zdm_lint_on_the_right_files() -> None:
    import re

    import yaml

    root = Path(__file__).parent.parent.parent
    hooks = {h["id"]: h for h in yaml.safe_load((root / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"zdm-lint", "zdm-lint-sql"}
    for hook in hooks.values():
        assert hook["entry"] == "zdm lint" and hook["language"] == "python"
    assert re.search(hooks["zdm-lint-sql"]["files"], "migrations/V1__x.sql")
    assert not re.search(hooks["zdm-lint"]["files"], "migrations/V1__x.sql")
    assert re.search(hooks["zdm-lint"]["files"], "plans/add_phone.yaml")
    assert any(d.startswith("pglast") for d in hooks["zdm-lint-sql"]["additional_dependencies"])
