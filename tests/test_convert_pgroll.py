"""`zdm convert` of pgroll migrations: a handful of pgroll's own examples (tests/fixtures/pgroll)
converted as a folder and run as a chain on a fresh database; exact conversions of the fields
that differ; an unsupported option names the file, the operation and the option."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from zdm import api
from zdm.cli import app
from zdm.lint.pgroll import PgrollError, convert_pgroll, is_pgroll
from zdm.logs import configure

FIXTURES = Path(__file__).parent / "fixtures" / "pgroll"


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> None:
    configure()


def converted(text: str) -> dict[str, object]:
    data = yaml.safe_load(convert_pgroll(text, "m.yaml", "m"))
    assert isinstance(data, dict)
    return data


def test_a_folder_converts_and_its_chain_runs(dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "plans"
    result = CliRunner().invoke(app, ["convert", str(FIXTURES), "-o", str(out)])
    assert result.exit_code == 0, result.output
    plans = sorted(out.glob("*.yaml"))
    sources = sorted(p for p in FIXTURES.iterdir() if p.suffix in {".json", ".yaml"})
    assert [p.stem for p in plans] == [p.stem for p in sources]
    for plan in plans:
        outcome = api.run_plan(plan, dsn)
        if outcome.status == "waiting":
            outcome = api.run_plan(plan, dsn, cont=True)
        assert outcome.status == "completed", f"{plan.name}: {outcome.message}"


def test_one_file_converts_to_stdout_and_json_is_detected_by_content(tmp_path: Path) -> None:
    source = tmp_path / "whatever.txt"
    source.write_text((FIXTURES / "01_create_tables.json").read_text())
    result = CliRunner().invoke(app, ["convert", str(source)])
    assert result.exit_code == 0, result.output
    plan = yaml.safe_load(result.stdout)
    tables = [step["create_table"] for step in plan["phases"]["additive"]]
    assert tables[2] == {
        "table": "sellers",
        "columns": [
            {"name": "name", "type": "varchar(255)"},
            {"name": "zip", "type": "integer"},
            {"name": "description", "type": "varchar(255)"},
        ],
        "primary_key": ["name", "zip"],
    }
    # pgroll columns are NOT NULL unless nullable: true.
    assert tables[1]["columns"][1] == {
        "name": "date",
        "type": "time with time zone",
        "nullable": False,
    }
    assert is_pgroll(source.read_text()) and not is_pgroll("CREATE TABLE t (a int);")


def test_fields_that_differ_are_converted() -> None:
    plan = converted(
        """
operations:
  - create_index:
      name: i
      table: fruits
      columns: [{column: name, sort: DESC, nulls: LAST, opclass: {name: text_pattern_ops}}, {column: id}]
      predicate: id > 10
      method: btree
      storage_parameters: fillfactor = 70
  - alter_column:
      table: posts
      column: title
      check: {name: title_length, constraint: length(title) > 3}
      up: SELECT CASE WHEN length(title) <= 3 THEN LPAD(title, 4, '-') ELSE title END
      down: title
  - alter_column: {table: events, column: name, comment: null, up: name, down: name}
  - create_constraint:
      type: foreign_key
      table: tickets
      name: fk_sellers
      columns: [sellers_name, sellers_zip]
      references: {table: sellers, columns: [name, zip], on_delete: CASCADE, match_type: FULL}
      up: {sellers_name: sellers_name, sellers_zip: sellers_zip}
      down: {sellers_name: sellers_name, sellers_zip: sellers_zip}
  - sql: {up: ALTER TABLE people ADD COLUMN birth_date timestamp, onComplete: true}
"""
    )
    assert plan["phases"] == {
        "additive": [
            {
                "create_index": {
                    "table": "fruits",
                    "name": "i",
                    "columns": [
                        {"column": "name", "sort": "desc", "nulls": "last",
                         "opclass": {"name": "text_pattern_ops"}},
                        "id",
                    ],
                    "where": "id > 10",
                    "method": "btree",
                    "storage_parameters": "fillfactor = 70",
                }
            }
        ],
        "cleanup": [
            {
                "add_foreign_key": {
                    "table": "tickets",
                    "name": "fk_sellers",
                    "columns": ["sellers_name", "sellers_zip"],
                    "references": {"table": "sellers", "columns": ["name", "zip"]},
                    "on_delete": "cascade",
                    "match_type": "full",
                }
            },
            {"sql": {"up": "ALTER TABLE people ADD COLUMN birth_date timestamp"}},
        ],
    }  # fmt: skip
    assert plan["changes"] == [
        {
            "alter_column": {
                "table": "posts",
                "column": "title",
                "check": {"name": "title_length", "constraint": "length(title) > 3"},
                "up": "(SELECT CASE WHEN length(title) <= 3 THEN LPAD(title, 4, '-') ELSE title END)",
                "down": "title",
            }
        },
        # Changed in place, where an unchanged column needs neither up nor down.
        {"alter_column": {"table": "events", "column": "name", "comment": None}},
    ]
    assert plan["gates"] == ["cleanup"]


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (
            "add_column: {table: t, column: {name: c, type: int, pk: true}}",
            "m.json: operations[1].add_column.column.pk: pgroll option (true) has no zdm equivalent",
        ),
        (
            "create_index: {table: t, name: i, columns: [a], tablespace: fast}",
            'm.json: operations[1].create_index.tablespace: pgroll option ("fast") has no zdm '
            "equivalent",
        ),
        (
            "create_table: {name: t, columns: [{name: a, type: int, references: "
            "{name: f, table: u, column: id, match_type: PARTIAL}}]}",
            "m.json: operations[1].create_table.columns[0].references.match_type: pgroll option "
            '("PARTIAL") has no zdm equivalent',
        ),
        ("frobnicate: {}", "m.json: operations[1]: unknown pgroll operation 'frobnicate'"),
    ],
)
def test_unsupported_options_name_file_operation_and_option(operation: str, message: str) -> None:
    text = f"operations:\n  - rename_table: {{from: a, to: b}}\n  - {operation}\n"
    with pytest.raises(PgrollError) as error:
        convert_pgroll(text, "m.json", "m")
    assert str(error.value) == message


def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "02_bad.json"
    bad.write_text('{"operations": [{"drop_table": {"name": "t"}}, {"add_column": {"table": "t", '
                   '"column": {"name": "c", "type": "int", "pk": true}}}]}')  # fmt: skip
    result = CliRunner().invoke(app, ["convert", str(tmp_path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr == (
        f"zdm convert: {bad}: operations[1].add_column.column.pk: pgroll option (true) has no "
        "zdm equivalent\n"
    )
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(app, ["convert", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder: give --output FOLDER" in result.stderr


def test_the_readme_line_converts_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    (line,) = [x for x in readme.splitlines() if x.startswith("zdm convert pgroll/")]
    source = tmp_path / "pgroll" / "migrations"
    source.mkdir(parents=True)
    for path in FIXTURES.glob("0[1-3]_*"):
        (source / path.name).write_text(path.read_text())
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, line.split()[1:])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "plans").iterdir()) == [
        "01_create_tables.yaml",
        "02_create_another_table.yaml",
        "03_add_column.yaml",
    ]
    assert result.stderr == "wrote 3 plan(s) to plans\n"


def test_constraint_operations_convert_by_what_their_up_and_down_do() -> None:
    plan = converted(
        """
operations:
  - drop_constraint:
      table: posts
      name: title_length
      up: title
      down: SELECT CASE WHEN length(title) <= 3 THEN LPAD(title, 4, '-') ELSE title END
  - drop_constraint: {table: reviews, name: reviews_review_unique, up: review, down: review}
  - drop_multicolumn_constraint:
      table: tickets
      name: check_zip_name
      up: {sellers_name: sellers_name, sellers_zip: sellers_zip}
      down: {sellers_name: sellers_name, sellers_zip: "greatest(sellers_zip, 1)"}
  - create_constraint: {type: primary_key, table: tasks, name: tasks_pkey, columns: [id], up: {id: id}, down: {id: id}}
"""
    )
    assert plan["changes"] == [
        {
            "drop_constraint": {
                "table": "posts",
                "name": "title_length",
                "column": "title",
                "up": "title",
                "down": "(SELECT CASE WHEN length(title) <= 3 THEN LPAD(title, 4, '-') ELSE title END)",
            }
        },
        {"drop_constraint": {"table": "reviews", "name": "reviews_review_unique"}},
        {
            "drop_constraint": {
                "table": "tickets",
                "name": "check_zip_name",
                "column": "sellers_zip",
                "up": "sellers_zip",
                "down": "greatest(sellers_zip, 1)",
            }
        },
        {"add_primary_key": {"table": "tasks", "name": "tasks_pkey", "columns": ["id"]}},
    ]  # fmt: skip
    # A new check whose `up` changes one column: that column's alter_column with the check.
    plan = converted(
        """
operations:
  - create_constraint:
      type: check
      table: tickets
      name: check_zip
      columns: [sellers_name, sellers_zip]
      check: sellers_zip > 0
      up: {sellers_name: sellers_name, sellers_zip: "greatest(sellers_zip, 1)"}
      down: {sellers_name: sellers_name, sellers_zip: sellers_zip}
"""
    )
    assert plan["changes"] == [
        {
            "alter_column": {
                "table": "tickets",
                "column": "sellers_zip",
                "check": {"name": "check_zip", "constraint": "sellers_zip > 0"},
                "up": "greatest(sellers_zip, 1)",
            }
        }
    ]
    with pytest.raises(PgrollError) as error:
        convert_pgroll(
            "operations:\n  - drop_multicolumn_constraint: {table: t, name: c,"
            " up: {a: a + 1, b: b + 1}, down: {a: a, b: b}}\n",
            "m.yaml",
            "m",
        )
    assert str(error.value) == (
        "m.yaml: operations[0].drop_multicolumn_constraint.down: zdm transforms one column while "
        "dropping a constraint, not several"
    )
