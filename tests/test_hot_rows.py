"""The backfill never waits on, nor deadlocks with, the application's row locks.

An application whose transactions update 2 or 3 rows in random order, a third of them among 200
hot rows spread over the table, runs while zdm backfills it. A batch that meets a row lock
gives up within `ROW_LOCK_WAIT_MS` and is retried locking only the rows no one holds (`FOR NO
KEY UPDATE SKIP LOCKED`); the walk comes back to the rows it passed over, and the proof covers
every row. No application transaction may fail, and every row ends right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from zdm_helpers import (
    add_phone,
    events,
    mismatched_phones,
    named,
    output_of,
    scalar,
    seed,
    start_zdm,
    wait_for,
    write_plan,
    zdm,
)

from zdm.demo.traffic import Mix, Traffic

pytestmark = pytest.mark.slow

ROWS = 20_000


def test_hot_row_transactions_during_a_backfill(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    seed(dsn, ROWS)
    plan = write_plan(
        tmp_path / "add_phone.yaml",
        add_phone(backfill={"batch_size": 300, "pause": "2ms", "workers": 2}),
    )
    mix = Mix(select=0, update=0, insert=0, txn=1)
    # 30 ms of the application's own work between the updates of a transaction: it holds its
    # first rows for 30 to 60 ms, longer than a batch waits for a row lock.
    with Traffic(dsn, threads=4, mix=mix, seed=7, txn_think_ms=30) as traffic:
        done = zdm("--log-format", "json", "run", str(plan), "--dsn", dsn, timeout=300)
    assert done.returncode == 0, output_of(done)
    report = traffic.report
    assert report is not None
    assert report.kinds["txn"].count > 50
    assert report.errors == 0, report.error_samples
    assert mismatched_phones(conn) == 0
    evts = events(done.stderr)
    print(
        f"txn: {report.kinds['txn'].count}, p99 {report.kinds['txn'].p99_ms:.1f} ms,"
        f" max {report.kinds['txn'].max_ms:.1f} ms;"
        f" batch retries {len(named(evts, 'batch_retry'))},"
        f" batches that skipped locked rows {len(named(evts, 'batch_skipped_locked_rows'))}"
    )


def test_a_row_held_through_the_walk_is_passed_over_then_done(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A row the application holds locked is passed over; the walk goes on past it, comes back
    to it, and writes it once the application lets go."""
    seed(dsn, 5_000)
    plan = write_plan(tmp_path / "add_phone.yaml", add_phone(backfill={"batch_size": 500}))
    first = zdm("run", str(plan), "--dsn", dsn, "--until", "dual_write")
    assert first.returncode == 0, output_of(first)
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM users WHERE id = 2500 FOR UPDATE").fetchone()
        proc = start_zdm("--log-format", "json", "run", str(plan), "--dsn", dsn)
        # The walk went past the held row: every other row is done while it is still held.
        wait_for(
            lambda: scalar(conn, "SELECT count(*) FROM users WHERE phone IS NULL") == 1,
            90,
            "every row but the held one backfilled",
            alive=proc,
        )
        assert scalar(conn, "SELECT phone IS NULL FROM users WHERE id = 2500")
        # The application's transaction goes on: it writes a row of a range the walk passed.
        holder.execute("UPDATE users SET name = 'still here' WHERE id = 2400")
        holder.commit()
    done = proc.wait()
    assert done.returncode == 0, output_of(done)
    evts = events(done.stderr)
    skipped = named(evts, "batch_skipped_locked_rows")
    assert skipped and skipped[0]["rows_locked_by_others"] == 1
    assert mismatched_phones(conn) == 0
    assert scalar(conn, "SELECT name FROM users WHERE id = 2400") == "still here"
