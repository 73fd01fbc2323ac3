"""`zdm lint` and `zdm convert` as users run them: exit codes, formats, stdout and stderr apart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zdm.cli import app

runner = CliRunner()

LT = "SET lock_timeout = '2s';\n"
BAD_SQL = LT + "CREATE INDEX users_email_idx ON users (email);\n"


def lint(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["lint", *args])
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_clean_file_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path / "V1__idx.sql", "CREATE INDEX CONCURRENTLY i ON users (email);\n")
    code, out, err = lint(str(path))
    assert (code, out) == (0, "")
    assert "no problems in 1 file" in err


def test_a_folder_lints_plans_of_changes_only(tmp_path: Path) -> None:
    write(tmp_path / "m" / "01_a.yaml", "version: 1\nphases:\n  additive: []\n")
    write(
        tmp_path / "m" / "02_b.yaml",
        "version: 1\nchanges:\n  - alter_column: {table: t, column: c, nullable: false}\n",
    )
    write(tmp_path / "m" / "notes.yaml", "title: not a plan\n")
    code, out, err = lint(str(tmp_path / "m"))
    assert code == 1
    assert "02_b.yaml:3:" in out and "[change-not-null-without-up]" in out
    assert "in 2 files" in err


def test_findings_exit_1_with_place_rule_and_fix(tmp_path: Path) -> None:
    path = write(tmp_path / "V1__idx.sql", BAD_SQL)
    code, out, err = lint(str(path))
    assert code == 1
    assert out.startswith(f"{path}:2:1: error [index-not-concurrent] CREATE INDEX on users")
    assert "SHARE lock" in out and "    fix: CREATE INDEX CONCURRENTLY" in out
    assert "create_index" in out
    assert "1 problem (1 error, 0 warnings) in 1 file" in err


def test_syntax_error_exits_2_with_line_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path / "V1__bad.sql", "SELECT 1;\nALTER TABLE users ADD COLUMN;\n")
    code, out, err = lint(str(path))
    assert code == 2
    assert out == ""
    assert f"{path}:2:29: cannot parse the SQL: syntax error at or near" in err


def test_unreadable_inputs_exit_2(tmp_path: Path) -> None:
    code, _, err = lint(str(tmp_path / "missing.sql"))
    assert code == 2 and "missing.sql: no such file or directory" in err
    latin = tmp_path / "V1__latin.sql"
    latin.write_bytes(b"-- caf\xe9\nSELECT 1;\n")
    code, _, err = lint(str(latin))
    assert code == 2 and f"{latin}:1: not UTF-8 text" in err


def test_invalid_plan_exits_2_with_its_place(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        "version: 1\nphases:\n  additive:\n    - add_column: {table: t, colum: {name: a}}\n",
    )
    code, _, err = lint(str(path))
    assert code == 2
    assert f"{path}:4:" in err and "colum" in err


def test_unknown_format_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path / "a.sql", BAD_SQL)
    code, _, err = lint("--format", "xml", str(path))
    assert code == 2 and "unknown format" in err


def test_json_format(tmp_path: Path) -> None:
    path = write(tmp_path / "a.sql", BAD_SQL + "ALTER TABLE users ADD COLUMN data json;\n")
    code, out, _ = lint("--format", "json", str(path))
    assert code == 1
    findings = json.loads(out)
    assert [(f["rule"], f["line"], f["severity"]) for f in findings] == [
        ("index-not-concurrent", 2, "error"),
        ("prefer-jsonb", 3, "warning"),
    ]
    assert set(findings[0]) == {"file", "line", "column", "rule", "severity", "message", "fix"}
    assert findings[1]["column"] == 30


def test_json_format_when_clean_is_an_empty_list(tmp_path: Path) -> None:
    path = write(tmp_path / "a.sql", "SELECT 1;\n")
    code, out, _ = lint("--format", "json", str(path))
    assert (code, json.loads(out)) == (0, [])


def test_github_format(tmp_path: Path) -> None:
    path = write(tmp_path / "a.sql", BAD_SQL)
    code, out, _ = lint("--format", "github", str(path))
    assert code == 1
    line = out.strip()
    assert line.startswith(
        f"::error file={path},line=2,col=1,title=zdm lint index-not-concurrent::CREATE INDEX"
    )
    assert "%0Afix: CREATE INDEX CONCURRENTLY" in line
    assert "\n" not in line


def test_suppression_comment_before_and_after(tmp_path: Path) -> None:
    before = write(
        tmp_path / "a.sql",
        LT + "-- zdm-lint: ignore index-not-concurrent (small table)\n"
        "CREATE INDEX i ON users (email);\n",
    )
    assert lint(str(before))[0] == 0
    trailing = write(
        tmp_path / "b.sql",
        "CREATE INDEX i ON users (email); -- zdm-lint: ignore index-not-concurrent, missing-lock-timeout\n"
        "CREATE INDEX j ON users (name);\n",
    )
    code, out, _ = lint("--format", "json", str(trailing))
    assert code == 1
    assert {(f["rule"], f["line"]) for f in json.loads(out)} == {
        ("index-not-concurrent", 2),
        ("missing-lock-timeout", 2),
    }


def test_suppression_of_an_unknown_rule_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path / "a.sql", LT + "-- zdm-lint: ignore index-not-concurent\nSELECT 1;\n")
    code, _, err = lint(str(path))
    assert code == 2
    assert f"{path}:2: zdm-lint: ignore names an unknown rule 'index-not-concurent'" in err


PLAN = """\
version: 1
phases:
  additive:
    - add_column: {table: users, column: {name: phone, type: text}}
    # zdm-lint: ignore index-before-backfill
    - create_index: {table: users, name: users_phone_idx, columns: [phone]}
    - sql:
        tables: [users]
        up: |
          SELECT 1;
          CREATE INDEX users_email_idx ON users (email);
  dual_write:
    - dual_write: {table: users, set: {phone: "contact->>'phone'"}}
  backfill:
    - backfill: {table: users}
"""


def test_plan_findings_point_into_the_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "plan.yaml", PLAN)
    code, out, _ = lint("--format", "json", str(path))
    assert code == 1
    assert [(f["rule"], f["line"], f["column"]) for f in json.loads(out)] == [
        ("index-not-concurrent", 11, 11)
    ]


def test_plan_suppression_covers_the_sql_of_a_step(tmp_path: Path) -> None:
    text = PLAN.replace("    - sql:\n", "    - sql:  # zdm-lint: ignore index-not-concurrent\n")
    path = write(tmp_path / "plan.yaml", text)
    assert lint(str(path))[0] == 0


def test_directory_is_searched_recursively(tmp_path: Path) -> None:
    write(tmp_path / "db" / "V001__users.sql", "CREATE TABLE users (id int, email varchar(20));\n")
    write(
        tmp_path / "db" / "later" / "V010__email.sql",
        LT + "ALTER TABLE users ALTER COLUMN email TYPE varchar(40);\n",
    )
    write(tmp_path / "db" / "V002__index.sql", BAD_SQL)
    write(
        tmp_path / "db" / "plans" / "phone.yml",
        PLAN.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY").replace(
            "          SELECT 1;\n", ""
        ),
    )
    write(tmp_path / "db" / "docker-compose.yml", "services: {db: {image: postgres}}\n")
    write(tmp_path / "db" / ".git" / "x.sql", "this is not sql")
    code, out, err = lint("--format", "json", str(tmp_path / "db"))
    findings = json.loads(out)
    assert code == 1, err
    assert [(Path(f["file"]).name, f["rule"]) for f in findings] == [
        ("V002__index.sql", "index-not-concurrent"),
        ("phone.yml", "concurrently-in-transaction"),
    ]


def test_flyway_conf_turns_the_file_transaction_off(tmp_path: Path) -> None:
    # Two statements besides SETs: a lone statement after SETs is not taken for a transaction.
    sql = (
        LT + "ALTER TABLE users ADD COLUMN a int;\nCREATE INDEX CONCURRENTLY i ON users (email);\n"
    )
    path = write(tmp_path / "V3__idx.sql", sql)
    assert lint(str(path))[0] == 1
    write(tmp_path / "V3__idx.sql.conf", "executeInTransaction=false\n")
    assert lint(str(path))[0] == 0


def test_without_pglast_sql_exits_2_and_plans_still_lint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pglast", None)
    path = write(tmp_path / "a.sql", BAD_SQL)
    code, out, err = lint(str(path))
    assert code == 2 and out == ""
    assert "pip install 'zdm[lint]'" in err
    plan = write(
        tmp_path / "p.yaml",
        "version: 1\nphases:\n  additive:\n"
        "    - add_column: {table: users, column: {name: phone, type: text}}\n"
        "    - add_column: {table: users, column: {name: r, type: float8, default: random()}}\n"
        "  cleanup:\n    - set_not_null: {table: users, column: phone}\n",
    )
    code, out, err = lint(str(plan))
    assert code == 1 and "[set-not-null-unfilled]" in out
    assert "[add-column-volatile-default] add_column r with the volatile default" in out
    with_sql = write(tmp_path / "q.yaml", PLAN)
    code, out, err = lint(str(with_sql))
    assert code == 2 and "the sql steps were not checked" in err and "zdm[lint]" in err
    result = runner.invoke(app, ["convert", str(path)])
    assert result.exit_code == 2 and "zdm[lint]" in result.stderr


def test_convert_writes_a_loadable_plan(tmp_path: Path) -> None:
    from zdm.plan import load_plan

    sql = write(tmp_path / "V7__email.sql", LT + "CREATE INDEX users_email_idx ON users (email);\n")
    result = runner.invoke(app, ["convert", str(sql)])
    assert result.exit_code == 0
    assert "create_index: {table: users, name: users_email_idx, columns: [email]}" in result.stdout
    out = tmp_path / "plan.yaml"
    result = runner.invoke(app, ["convert", str(sql), "-o", str(out)])
    assert result.exit_code == 0 and result.stdout == ""
    assert f"wrote {out}" in result.stderr
    assert load_plan(out).name == "V7__email"
    assert lint(str(out))[0] == 0


def test_convert_exits_2_on_bad_sql(tmp_path: Path) -> None:
    sql = write(tmp_path / "bad.sql", "ALTER TABLE;\n")
    result = runner.invoke(app, ["convert", str(sql)])
    assert result.exit_code == 2
    assert f"{sql}:1:12: cannot parse the SQL" in result.stderr
    assert "Traceback" not in result.stderr
    result = runner.invoke(app, ["convert", str(tmp_path / "none.sql")])
    assert result.exit_code == 2 and "cannot read" in result.stderr
