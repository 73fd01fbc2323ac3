"""Splitting and unwrapping the SQL of `sql` steps (zdm.ddl.sqltext)."""

from __future__ import annotations

import pytest

from zdm.ddl.sqltext import split_statements


@pytest.mark.parametrize(
    ("text", "statements"),
    [
        ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("SELECT 1", ["SELECT 1"]),
        ("SELECT 1;\n-- the end\n", ["SELECT 1"]),
        ("  ;; /* nothing */ ;", []),
        ("SELECT ';'; SELECT 'it''s; fine'", ["SELECT ';'", "SELECT 'it''s; fine'"]),
        ("SELECT E'a\\'; b'; SELECT 2", ["SELECT E'a\\'; b'", "SELECT 2"]),
        ('SELECT "a;""b" FROM t; SELECT 2', ['SELECT "a;""b" FROM t', "SELECT 2"]),
        ("SELECT 1 -- no; split\n; SELECT 2", ["SELECT 1 -- no; split", "SELECT 2"]),
        (
            "/* a /* nested; */ comment; */ SELECT 1; SELECT 2",
            [
                "/* a /* nested; */ comment; */ SELECT 1",
                "SELECT 2",
            ],
        ),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $fn$ BEGIN RETURN 1; END $fn$;"
            " SELECT f()",
            [
                "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $fn$ BEGIN RETURN 1; END $fn$",
                "SELECT f()",
            ],
        ),
        ("DO $$ BEGIN PERFORM 1; END $$; SELECT 2", ["DO $$ BEGIN PERFORM 1; END $$", "SELECT 2"]),
        ("SELECT $1::int; SELECT a$b FROM t", ["SELECT $1::int", "SELECT a$b FROM t"]),
        (
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC"
            " SELECT CASE WHEN true THEN 1 END; SELECT 2; END; SELECT 3",
            [
                "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC"
                " SELECT CASE WHEN true THEN 1 END; SELECT 2; END",
                "SELECT 3",
            ],
        ),
        # Outside a routine body BEGIN and END are statements of their own.
        ("BEGIN; SELECT 1; END;", ["BEGIN", "SELECT 1", "END"]),
        (
            "SELECT CASE WHEN x THEN 1 END FROM t; SELECT 2",
            [
                "SELECT CASE WHEN x THEN 1 END FROM t",
                "SELECT 2",
            ],
        ),
    ],
)
def test_split_statements(text: str, statements: list[str]) -> None:
    assert split_statements(text) == statements
