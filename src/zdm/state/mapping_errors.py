"""The rows a mapping raised for, as `zdm status` shows them (table `mapping_errors`)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

BAD_ROWS_SHOWN = 10
"""Rows named in the message that stops a backfill on rows its mapping cannot convert, and
in `zdm status`."""


def trigger_errors(
    conn: psycopg.Connection[Any], schema: str, plan: str, first: int = 5
) -> dict[str, Any]:
    """How many rows the plan's dual-write triggers failed to map, and the first few."""
    table = sql.Identifier(schema, "mapping_errors")
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table.as_string(conn)]).fetchone()
    if not exists or not exists[0]:
        return {"count": 0, "first": []}
    count = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE plan = %s AND source = 'trigger'").format(table),
        [plan],
    ).fetchone()
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            sql.SQL(
                "SELECT table_name, row_key, column_name, sqlstate, message, at FROM {}"
                " WHERE plan = %s AND source = 'trigger' ORDER BY id LIMIT %s"
            ).format(table),
            [plan, first],
        ).fetchall()
    return {"count": count[0] if count else 0, "first": rows}
