"""`sql` steps against a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from zdm_helpers import scalar, write_plan

from zdm import api


def test_statements_outside_a_transaction_run_one_by_one_and_roll_back(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Sent as one string, PostgreSQL would run them as one implicit transaction, and refuse
    CREATE INDEX CONCURRENTLY in it."""
    conn.execute("CREATE TABLE t (a int, b int)")
    plan = write_plan(
        tmp_path / "two.yaml",
        {
            "version": 1,
            "name": "two",
            "phases": {
                "additive": [
                    {
                        "sql": {
                            "up": "CREATE INDEX CONCURRENTLY t_a ON t (a);\n"
                            "CREATE INDEX CONCURRENTLY t_b ON t (b);\n",
                            "down": "DROP INDEX CONCURRENTLY t_b; DROP INDEX CONCURRENTLY t_a;",
                            "transactional": False,
                            "lock": "SHARE UPDATE EXCLUSIVE",
                        }
                    }
                ]
            },
        },
    )
    indexes = (
        "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = 't'"
    )
    shown = api.dry_run(plan, dsn)
    assert "CREATE INDEX CONCURRENTLY t_a ON t (a);\n" in shown, shown
    outcome = api.run_plan(plan, dsn)
    assert outcome.status == "completed", outcome.message
    assert scalar(conn, indexes) == "t_a,t_b"
    outcome = api.rollback(plan, dsn)
    assert outcome.status == "rolled_back", outcome.message
    assert scalar(conn, indexes) is None
