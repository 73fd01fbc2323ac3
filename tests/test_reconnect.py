"""Dropped connections: the server ends zdm's sessions mid-run, and the same `zdm run` rides it out.

A network blip, a proxy restart, a failover or a DBA's `pg_terminate_backend` ends zdm's
connections. The run must not stop and wait for a person: it reconnects with growing pauses,
takes the plan's lock again, finds the step it was in and continues after its last committed
checkpoint — one `zdm run`, exit 0, every row right, no batch walked twice.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from zdm_helpers import (
    add_phone,
    events,
    final_catalog_problems,
    mismatched_phones,
    named,
    output_of,
    run_row,
    scalar,
    seed,
    start_zdm,
    wait_for,
    write_plan,
    zdm,
    zdm_backends,
)

from zdm.demo.testing import EmbeddedServer, temporary_database

pytestmark = pytest.mark.slow

ROWS = 30_000  # 75 batches of 400 rows, 5 ms apart
BATCH = 400


def run_args(plan: Path, dsn: str) -> list[str]:
    return ["--log-format", "json", "run", str(plan), "--dsn", dsn]


def rows_done(conn: psycopg.Connection[Any]) -> int:
    if not scalar(conn, "SELECT to_regclass('zdm.backfills') IS NOT NULL"):
        return 0
    return int(scalar(conn, "SELECT coalesce(sum(rows_done), 0) FROM zdm.backfills"))


def terminate_all(conn: psycopg.Connection[Any], pid: int) -> int:
    """Ends every session of zdm process `pid`, as a DBA or a failover would."""
    backends = [b for b, _, _ in zdm_backends(conn, pid)]
    for backend in backends:
        conn.execute("SELECT pg_terminate_backend(%s)", [backend])
    return len(backends)


def assert_completed(conn: psycopg.Connection[Any], server_version: int, rows: int) -> None:
    assert mismatched_phones(conn) == 0
    assert scalar(conn, "SELECT count(*) FROM users") == rows
    assert final_catalog_problems(conn, server_version) == []
    run = run_row(conn)
    assert run["status"] == "completed"
    assert {s["status"] for s in run["steps"].values()} == {"done"}


def test_three_drops_during_backfill_one_run(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, server_version: int
) -> None:
    seed(dsn, ROWS)
    plan = write_plan(
        tmp_path / "add_phone.yaml", add_phone(backfill={"batch_size": BATCH, "pause": "5ms"})
    )
    proc = start_zdm(*run_args(plan, dsn))
    for at in (4_000, 12_000, 20_000):
        wait_for(lambda at=at: rows_done(conn) >= at, 90, f"{at} rows backfilled", alive=proc)
        assert terminate_all(conn, proc.pid) >= 2  # the lock holder and the worker at least
        # The next drop only after the run is back at work.
        wait_for(lambda at=at: rows_done(conn) > at + BATCH, 90, "the run to come back", alive=proc)
    done = proc.wait()
    assert done.returncode == 0, output_of(done)
    evts = events(done.stderr)
    assert len(named(evts, "connection_lost")) >= 3
    # Each reconnect resumed after the last committed checkpoint: every row walked once.
    walked, updated = conn.execute(
        "SELECT sum(rows_done), sum(rows_updated) FROM zdm.backfills"
    ).fetchone() or (0, 0)
    assert (walked, updated) == (ROWS, ROWS)
    assert named(evts, "backfill_second_pass") == []
    assert_completed(conn, server_version, ROWS)


def test_drop_during_a_cleanup_index_build(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path, server_version: int
) -> None:
    seed(dsn, 5_000)
    plan = write_plan(tmp_path / "add_phone.yaml", add_phone())
    # An old snapshot: CREATE INDEX CONCURRENTLY waits for it, so the drop lands inside it.
    with psycopg.connect(dsn) as snapshot:
        snapshot.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        snapshot.execute("SELECT 1").fetchone()
        proc = start_zdm(*run_args(plan, dsn))
        wait_for(
            lambda: any(
                "CREATE INDEX CONCURRENTLY" in q for _, _, q in zdm_backends(conn, proc.pid)
            ),
            90,
            "CREATE INDEX CONCURRENTLY",
            interval=0.02,
            alive=proc,
        )
        assert terminate_all(conn, proc.pid) >= 2
        time.sleep(0.5)
        snapshot.rollback()
    done = proc.wait()
    assert done.returncode == 0, output_of(done)
    evts = events(done.stderr)
    assert len(named(evts, "connection_lost")) == 1
    # The build the drop interrupted left an INVALID index: dropped and built again.
    units = [e["unit"] for e in named(evts, "unit_done")]
    assert "drop invalid index idx_users_phone" in units
    assert_completed(conn, server_version, 5_000)


def test_server_restart_during_backfill(tmp_path: Path) -> None:
    # A server of its own: the test restarts it.
    with EmbeddedServer(fast=True) as server, temporary_database(server.dsn) as dsn:
        with psycopg.connect(dsn) as c:
            version = c.info.server_version
        seed(dsn, ROWS)
        plan = write_plan(
            tmp_path / "add_phone.yaml", add_phone(backfill={"batch_size": BATCH, "pause": "5ms"})
        )
        proc = start_zdm(*run_args(plan, dsn))
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_for(lambda: rows_done(conn) >= 8_000, 90, "8000 rows backfilled", alive=proc)
        server.restart()
        done = proc.wait()
        assert done.returncode == 0, output_of(done)
        assert named(events(done.stderr), "connection_lost")
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert_completed(conn, version, ROWS)


def test_no_reconnect_when_disabled(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    seed(dsn, ROWS)
    plan = write_plan(
        tmp_path / "add_phone.yaml",
        add_phone(
            backfill={"batch_size": BATCH, "pause": "5ms"}, settings={"reconnect_timeout": 0}
        ),
    )
    proc = start_zdm(*run_args(plan, dsn))
    wait_for(lambda: rows_done(conn) >= 4_000, 90, "4000 rows backfilled", alive=proc)
    terminate_all(conn, proc.pid)
    done = proc.wait()
    assert done.returncode != 0
    assert named(events(done.stderr), "connection_lost") == []
    # Resumable as after any failure: a second run finishes the job.
    again = zdm(*run_args(plan, dsn))
    assert again.returncode == 0, output_of(again)
    assert mismatched_phones(conn) == 0


def test_another_runner_took_the_plan_meanwhile(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """After a drop, the run takes the plan's lock again before it does anything: if another
    runner holds it by then, this one stops with exit 3 and leaves the work to it."""
    seed(dsn, ROWS)
    plan = write_plan(
        tmp_path / "add_phone.yaml", add_phone(backfill={"batch_size": BATCH, "pause": "5ms"})
    )
    proc = start_zdm(*run_args(plan, dsn))
    wait_for(lambda: rows_done(conn) >= 4_000, 90, "4000 rows backfilled", alive=proc)
    holder = psycopg.connect(dsn, autocommit=True)
    try:
        stop = threading.Event()

        def take_lock() -> None:
            # Grab the plan's lock the moment the server has freed it.
            while not stop.is_set():
                got = holder.execute(
                    "SELECT pg_try_advisory_lock(x'7a646d'::int, hashtext('add_phone'))"
                ).fetchone()
                if got and got[0]:
                    return
                time.sleep(0.001)

        grabber = threading.Thread(target=take_lock)
        grabber.start()
        terminate_all(conn, proc.pid)
        grabber.join(30)
        stop.set()
        done = proc.wait()
        assert done.returncode == 3, output_of(done)
        assert named(events(done.stderr), "connection_lost")
    finally:
        holder.close()
