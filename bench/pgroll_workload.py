"""pgroll's published backfill benchmark workload, run as a zdm plan.

pgroll's BenchmarkBackfill (internal/benchmarks/benchmarks_test.go) creates
`users(id serial PRIMARY KEY, name varchar(255) NULL)`, fills it with rows whose name is NULL,
then times the start and completion of a migration that makes `name` NOT NULL, with NULLs
becoming 'placeholder'. Here the same change is a zdm plan (a dual_write trigger, a backfill
setting name = coalesce(name, 'placeholder'), set_not_null, drop_dual_write), timed from start
to completion. pgroll's figures are the ones it published from its CI runner; they are printed
beside ours for orientation only, not measured side by side.

    python bench/pgroll_workload.py --rows 10000,100000,300000,1000000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from zdm import api
from zdm.demo.run import table
from zdm.demo.testing import EmbeddedServer, create_database
from zdm.engine.session import connect
from zdm.logs import configure
from zdm.report import collect

PLAN = """\
version: 1
name: pgroll_workload
description: pgroll's benchmark workload; users.name becomes NOT NULL, NULLs become 'placeholder'.
phases:
  dual_write:
    - dual_write: {table: users, set: {name: "coalesce(name, 'placeholder')"}}
  backfill:
    - backfill: {table: users}
  cleanup:
    - set_not_null: {table: users, column: name}
    - drop_dual_write: {table: users}
"""

# Rows/s that pgroll published for this workload (start + complete, on its CI runner).
PGROLL_PUBLISHED = {10_000: 53_000, 300_000: 10_000}


def seed(dsn: str, rows: int) -> None:
    """pgroll's table and rows: every name NULL (it COPYs them; one INSERT is equivalent)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id serial PRIMARY KEY, name varchar(255) NULL)")
        conn.execute(
            sql.SQL("INSERT INTO users (name) SELECT NULL FROM generate_series(1, {})").format(
                sql.Literal(rows)
            )
        )


def check(dsn: str) -> tuple[int, bool]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM users WHERE name IS DISTINCT FROM 'placeholder'),"
            " (SELECT attnotnull FROM pg_attribute"
            "  WHERE attrelid = 'users'::regclass AND attname = 'name')"
        ).fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000,100000,300000,1000000")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="fsync and synchronous_commit off (default: a durable server, like pgroll's CI)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    configure("console", args.log_level)
    counts = [int(n.replace("_", "")) for n in args.rows.split(",") if n.strip()]

    out: list[list[str]] = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(fast=args.fast) as server:
        plan = Path(tmp) / "pgroll_workload.yaml"
        plan.write_text(PLAN)
        with psycopg.connect(server.dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        version = str(row[0]) if row else "?"
        for n in counts:
            dsn = create_database(server.dsn, f"pgroll_{n}")
            seed(dsn, n)
            started = time.monotonic()
            outcome = api.run_plan(plan, dsn)
            seconds = time.monotonic() - started
            if outcome.status != "completed":
                print(f"{n:,} rows: {outcome.message}", file=sys.stderr)
                return 1
            wrong, not_null = check(dsn)
            if wrong or not not_null:
                print(
                    f"{n:,} rows: {wrong} rows not placeholder, NOT NULL {not_null}",
                    file=sys.stderr,
                )
                return 1
            with connect(dsn, "bench") as conn:
                record = collect(conn, dsn, run_id=outcome.run_id)
            assert record is not None
            backfill = record["backfills"][0]
            published = PGROLL_PUBLISHED.get(n)
            out.append(
                [
                    f"{n:,}",
                    f"{seconds:.2f} s",
                    f"{n / seconds:,.0f}",
                    f"{backfill['rows_per_s'] or 0:,.0f}",
                    f"{backfill['batches']:,}",
                    f"{record['downtime']['max_ms']} ms",
                    f"~{published:,} (published)" if published else "-",
                ]
            )
            print(f"{n:,} rows: {seconds:.2f} s", file=sys.stderr)
    print(
        f"pgroll's workload as a zdm plan, PostgreSQL {version}"
        f" ({'fsync off' if args.fast else 'durable'}), start to completion"
    )
    print(
        table(
            [
                "rows",
                "zdm run",
                "zdm rows/s",
                "backfill rows/s",
                "batches",
                "longest app-blocking lock",
                "pgroll rows/s",
            ],
            out,
            indent="",
        )
    )
    print(
        f"load average at the start {load[0]:.1f}, at the end {os.getloadavg()[0]:.1f}"
        f" ({os.cpu_count()} CPUs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
