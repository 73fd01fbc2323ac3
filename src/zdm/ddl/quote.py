"""Dollar quoting for function bodies, which are text inside DDL."""

from __future__ import annotations

from psycopg import sql

from zdm.ddl.statement import user_sql


def dollar_quoted(body: str) -> sql.SQL:
    """`body` between dollar quotes whose tag does not occur in it."""
    n = 0
    tag = "$zdm$"
    while tag in body:
        n += 1
        tag = f"$zdm{n}$"
    return user_sql(f"{tag}{body}{tag}")


def do_block(body: str | sql.Composable) -> sql.Composed:
    """`DO $zdm$<body>$zdm$`: an anonymous PL/pgSQL block; a composed `body` has its names and
    values quoted already."""
    return sql.SQL("DO {}").format(
        dollar_quoted(body if isinstance(body, str) else body.as_string(None))
    )
