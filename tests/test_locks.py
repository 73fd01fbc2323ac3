"""Lock behaviour of a real `zdm run` against other sessions: what users rely on when tables are busy.

- zdm never queues the application behind its ACCESS EXCLUSIVE request for longer than a short
  lock_timeout: while another transaction holds the table, zdm retries (logging who blocks it)
  and then waits for the long transaction to end without queueing, and the application's
  statements keep flowing;
- when the blocker never goes away, the run fails (exit 1) with the error on its step and run
  rows, and resumes from that step once the blocker is gone;
- a second `zdm run` of the same plan exits 3 and names the process that holds the plan.

The plan starts with a `sql` step that waits for an advisory lock the test holds (a "gate"): it
lets the test start a blocker at a known moment before zdm reaches the ALTER.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs
from zdm_helpers import (
    events,
    named,
    output_of,
    run_row,
    scalar,
    seed,
    start_zdm,
    wait_for,
    write_plan,
    zdm,
)

from zdm import api
from zdm.demo.testing import TEST_DSN_ENV, EmbeddedServer, create_database
from zdm.demo.traffic import Traffic
from zdm.engine.policy import lock_timeout_ms, under_deadlock_timeout
from zdm.plan import Settings

GATE = 7007
ROWS = 2_000


def lock_plan(tmp_path: Path, **settings: Any) -> Path:
    plan = {
        "version": 1,
        "name": "locks",
        "settings": settings,
        "phases": {
            "additive": [
                {
                    "sql": {
                        "up": f"SELECT pg_advisory_xact_lock_shared({GATE})",
                        "lock": "ACCESS SHARE",
                    }
                },
                {"add_column": {"table": "users", "column": {"name": "phone", "type": "text"}}},
            ]
        },
    }
    return write_plan(tmp_path / "locks.yaml", plan)


@pytest.fixture
def seeded(dsn: str) -> str:
    seed(dsn, ROWS)
    return dsn


@pytest.fixture
def watcher(seeded: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(seeded, autocommit=True) as conn:
        yield conn


class Gate:
    """Holds the advisory lock the plan's first step waits for."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("SELECT pg_advisory_lock(%s)", [GATE])

    def someone_waits(self, watcher: psycopg.Connection[Any]) -> bool:
        return bool(
            scalar(
                watcher,
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                " AND objid = %s AND NOT granted)",
                [GATE],
            )
        )

    def open(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", [GATE])

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def gate(seeded: str) -> Iterator[Gate]:
    g = Gate(seeded)
    yield g
    g.close()


class Blocker(threading.Thread):
    """A transaction holding `mode` on users for `seconds` (forever when None, until release)."""

    def __init__(self, dsn: str, mode: str = "ACCESS SHARE", seconds: float | None = None):
        super().__init__(daemon=True)
        self.dsn, self.mode, self.seconds = dsn, mode, seconds
        self.locked = threading.Event()
        self.released = threading.Event()
        self.pid = 0
        self.ended_at = 0.0

    def run(self) -> None:
        with psycopg.connect(self.dsn) as conn:
            self.pid = conn.info.backend_pid
            conn.execute(f"LOCK TABLE users IN {self.mode} MODE")
            self.locked.set()
            if self.seconds is not None:
                conn.execute("SELECT pg_sleep(%s)", [self.seconds])
            else:
                self.released.wait(120)
            conn.rollback()
            self.ended_at = time.monotonic()

    def hold(self) -> Blocker:
        self.start()
        assert self.locked.wait(10)
        return self


def run_args(plan: Path, dsn: str) -> list[str]:
    return ["--log-format", "json", "run", str(plan), "--dsn", dsn]


def blocker_pids(evts: list[dict[str, Any]], name: str, key: str) -> set[int]:
    return {h["pid"] for e in named(evts, name) for h in e.get(key) or []}


def test_waits_for_a_long_transaction_without_queueing_the_app(
    seeded: str, watcher: psycopg.Connection[Any], gate: Gate, tmp_path: Path
) -> None:
    plan = lock_plan(tmp_path)  # defaults: lock_timeout 50ms rising to 2s
    with Traffic(seeded, threads=2, pause_ms=5) as traffic:
        proc = start_zdm(*run_args(plan, seeded))
        wait_for(lambda: gate.someone_waits(watcher), 60, "zdm at the gate", alive=proc)
        time.sleep(0.3)  # the application runs on its own for a moment
        blocker = Blocker(seeded, seconds=3).hold()
        t_block = traffic.now()
        blocked_at = time.monotonic()
        time.sleep(0.2)
        gate.open()  # zdm meets a young blocker: it tries the lock, then waits for the old one
        done = proc.wait()
        t_end = traffic.now()
        blocker.join()
    assert done.returncode == 0, output_of(done)
    evts = events(done.stderr)
    # zdm said who was in its way, by backend pid.
    assert blocker.pid in blocker_pids(evts, "lock_retry", "blockers") | blocker_pids(
        evts, "waiting_for_long_transaction", "holders"
    ), output_of(done)
    assert blocker.pid in blocker_pids(evts, "waiting_for_long_transaction", "holders")
    # It queued behind the young blocker once (50ms), then waited for that transaction to end
    # without queueing: not once more at each retry until the blocker was a second old.
    assert len(named(evts, "lock_retry")) <= 1, output_of(done)
    # The ALTER went through only after the blocker ended: zdm waited, it did not give up.
    assert blocker.ended_at - blocked_at >= 2.9
    assert scalar(
        watcher,
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'users'::regclass"
        " AND attname = 'phone')",
    )
    assert run_row(watcher, "locks")["status"] == "completed"

    report = traffic.report
    assert report is not None
    window = report.window(t_block, t_end)
    stalls = window.stalls(100)
    print(
        f"\napp during the 3s blocker and zdm's wait: {window.count} statements,"
        f" p99 {window.p99_ms:.0f}ms, max {window.max_ms:.0f}ms; stalls >=100ms: {stalls}"
    )
    assert window.count > 100
    assert window.errors == 0, window.error_samples
    # Had zdm queued its ACCESS EXCLUSIVE request behind the blocker, every statement would
    # have waited for the rest of the blocker's 3 seconds. Coarse bound: the machine is noisy.
    assert window.max_ms < 1000


@pytest.mark.parametrize("blocker_age", ["young", "old", "idle"])
def test_a_blocker_that_never_lets_go_fails_the_run_resumably(
    seeded: str,
    watcher: psycopg.Connection[Any],
    gate: Gate,
    tmp_path: Path,
    blocker_age: str,
) -> None:
    plan = lock_plan(
        tmp_path,
        lock_timeout="50ms",
        lock_timeout_max="100ms",
        lock_retries=3,
        retry_max_wait="100ms",
    )
    if blocker_age == "old":
        gate.open()
        blocker = Blocker(seeded).hold()
        time.sleep(1.2)  # older than zdm's long-transaction threshold (1s)
        proc = start_zdm(*run_args(plan, seeded))
    else:
        proc = start_zdm(*run_args(plan, seeded))
        wait_for(lambda: gate.someone_waits(watcher), 60, "zdm at the gate", alive=proc)
        # young: a running query (active), which zdm retries against; idle: a young transaction
        # idle in its client, which zdm waits for without queueing whatever its age.
        blocker = Blocker(seeded, seconds=5 if blocker_age == "young" else None).hold()
        if blocker_age == "idle":
            time.sleep(0.1)
        gate.open()
    try:
        failed = proc.wait()
    finally:
        blocker.released.set()
        blocker.join()

    assert failed.returncode == 1, output_of(failed)
    assert "failed" in failed.stderr and "resumable" in failed.stderr
    evts = events(failed.stderr)
    if blocker_age == "young":
        # One attempt under the short lock_timeout, whose retry names the blocker; then zdm
        # waits for that transaction to end without queueing behind it again.
        assert len(named(evts, "lock_retry")) == 1, output_of(failed)
        assert blocker.pid in blocker_pids(evts, "lock_retry", "blockers"), output_of(failed)
    assert blocker.pid in blocker_pids(evts, "waiting_for_long_transaction", "holders")
    expected = "did not end"
    run = run_row(watcher, "locks")
    step = run["steps"]["additive[1]"]
    assert run["status"] == "failed"
    assert step["status"] == "failed"
    assert expected in step["last_error"], step["last_error"]
    assert expected in run["last_error"]
    assert run["steps"]["additive[0]"]["status"] == "done"

    # The blocker is gone: the same command resumes at the failed step and finishes.
    resumed = zdm(*run_args(plan, seeded))
    assert resumed.returncode == 0, output_of(resumed)
    run = run_row(watcher, "locks")
    assert run["status"] == "completed"
    assert run["steps"]["additive[1]"]["attempts"] == 2
    assert run["steps"]["additive[0]"]["attempts"] == 1  # not run again
    assert scalar(watcher, "SELECT count(*) FROM zdm.runs") == 1


def test_a_second_run_of_the_same_plan_exits_3_naming_the_holder(
    seeded: str, watcher: psycopg.Connection[Any], gate: Gate, tmp_path: Path
) -> None:
    plan = lock_plan(tmp_path)
    first = start_zdm(*run_args(plan, seeded))
    wait_for(lambda: gate.someone_waits(watcher), 60, "zdm at the gate", alive=first)

    second = zdm("run", plan, "--dsn", seeded)
    assert second.returncode == 3, output_of(second)
    assert "locked" in second.stderr
    assert "zdm run locks (" in second.stderr and f":{first.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    assert second.stdout == ""

    status = zdm("status", "locks", "--dsn", seeded)
    assert status.returncode == 0, output_of(status)
    assert f":{first.pid} (running now)" in status.stdout

    gate.open()
    done = first.wait()
    assert done.returncode == 0, output_of(done)
    assert scalar(watcher, "SELECT count(*) FROM zdm.runs") == 1
    assert run_row(watcher, "locks")["status"] == "completed"


def test_a_sql_step_waits_for_long_holders_of_the_tables_it_names(
    seeded: str, watcher: psycopg.Connection[Any], tmp_path: Path
) -> None:
    sql_step = {"up": "ALTER TABLE users ADD COLUMN note text", "tables": ["users"]}
    plan = write_plan(
        tmp_path / "sql.yaml",
        {"version": 1, "name": "sqltables", "phases": {"additive": [{"sql": sql_step}]}},
    )
    blocker = Blocker(seeded).hold()  # idle in its transaction, holding ACCESS SHARE
    outcome: list[Any] = []
    with capture_logs() as logs:
        running = threading.Thread(target=lambda: outcome.append(api.run_plan(plan, seeded)))
        running.start()
        wait_for(
            lambda: any(e["event"] == "waiting_for_long_transaction" for e in logs),
            60,
            "zdm to wait for the blocker",
        )
        blocker.released.set()
        running.join(60)
    assert outcome and outcome[0].status == "completed", outcome
    waits = [e for e in logs if e["event"] == "waiting_for_long_transaction"]
    assert blocker.pid in {h["pid"] for h in waits[0]["holders"]}
    assert not [e for e in logs if e["event"] == "lock_retry"]  # it never queued
    assert scalar(
        watcher,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'note'",
    )


@pytest.mark.skipif(
    bool(os.environ.get(TEST_DSN_ENV)),
    reason=f"needs a server of its own with a short autovacuum_naptime ({TEST_DSN_ENV} is set)",
)
def test_an_autovacuum_in_the_way_is_cancelled_not_waited_for(tmp_path: Path) -> None:
    """Autovacuum holds SHARE UPDATE EXCLUSIVE for as long as it works on a table (hours on a big
    one) and gives way to a lock request after deadlock_timeout; zdm cancels it at once instead
    of queueing behind it for a lock_timeout on every attempt, or waiting for it to finish."""
    with EmbeddedServer(fast=True, settings={"autovacuum_naptime": "1s"}) as server:
        dsn = create_database(server.dsn, "zdm_autovacuum")
        with psycopg.connect(dsn, autocommit=True) as conn:
            # A vacuum of this table sleeps 100 ms for every page it reads: it works for a minute.
            conn.execute(
                "CREATE TABLE users (id int PRIMARY KEY, v text) WITH"
                " (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,"
                " autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1)"
            )
            conn.execute(
                "INSERT INTO users SELECT i, repeat('x', 100) FROM generate_series(1, 50000) i"
            )
            conn.execute("DELETE FROM users WHERE id % 2 = 0")
            worker = wait_for(
                lambda: scalar(
                    conn,
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
                    " AND query LIKE '%users%'",
                ),
                60,
                "autovacuum to work on users",
            )
            column = {"table": "users", "column": {"name": "phone", "type": "text"}}
            plan = write_plan(
                tmp_path / "av.yaml",
                {"version": 1, "name": "av", "phases": {"additive": [{"add_column": column}]}},
            )
            with capture_logs() as logs:
                outcome = api.run_plan(plan, dsn)
            assert outcome.status == "completed", outcome.message
            cancelled = [e for e in logs if e["event"] == "autovacuum_cancelled"]
            assert [e["holder"]["pid"] for e in cancelled] == [worker], logs
            assert not [e for e in logs if e["event"] == "lock_retry"], logs
            assert (
                scalar(conn, "SELECT count(*) FROM zdm.events WHERE event = 'autovacuum_cancelled'")
                == 1
            )
        shown = zdm("report", "av", "--dsn", dsn)
        assert shown.returncode == 0, output_of(shown)
        assert "cancelled an autovacuum in the way" in shown.stdout


def test_a_lock_cycle_with_the_application_ends_on_zdms_side(dsn: str, tmp_path: Path) -> None:
    """zdm's unit holds `a` and then needs `b`; the application holds `b` and, having started
    waiting for `a` first, would run the server's deadlock check first and be its victim. Even
    with the plan's lock_timeout above `deadlock_timeout`, zdm's wait is capped below it: zdm
    times out, retries, and the application's transaction commits without an error."""
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE a (id int); CREATE TABLE b (id int)")
        deadlock_ms = int(
            scalar(setup, "SELECT setting FROM pg_settings WHERE name = 'deadlock_timeout'")
        )
    # The pause between the two ALTERs lets the application queue for `a` before zdm asks for b.
    up = "ALTER TABLE a ADD COLUMN x int; SELECT pg_sleep(0.2); ALTER TABLE b ADD COLUMN y int"
    plan = write_plan(
        tmp_path / "cycle.yaml",
        {
            "version": 1,
            "name": "cycle",
            "settings": {"lock_timeout": f"{deadlock_ms * 3 // 2}ms", "lock_timeout_max": "5s"},
            "phases": {"additive": [{"sql": {"up": up, "tables": ["a", "b"]}}]},
        },
    )
    errors: list[str] = []

    def application() -> None:
        with psycopg.connect(dsn, autocommit=True) as watch, psycopg.connect(dsn) as app:
            wait_for(
                lambda: scalar(
                    watch,
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = 'a'::regclass"
                    " AND mode = 'AccessExclusiveLock' AND granted)",
                ),
                60,
                "zdm to lock a",
            )
            try:
                app.execute("INSERT INTO b VALUES (1)")
                app.execute("SELECT count(*) FROM a")
                app.commit()
            except psycopg.Error as e:
                errors.append(f"{type(e).__name__}: {e}")

    with capture_logs() as logs:
        app_thread = threading.Thread(target=application, daemon=True)
        app_thread.start()
        outcome = api.run_plan(plan, dsn)
        app_thread.join(60)
    assert errors == []
    assert outcome.status == "completed", outcome
    retries = [e for e in logs if e["event"] == "lock_retry"]
    assert retries and retries[0]["lock_timeout_ms"] == deadlock_ms // 2


def test_zdms_lock_waits_are_capped_below_the_servers_deadlock_timeout(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET deadlock_timeout = '300ms'")
        capped = under_deadlock_timeout(Settings(lock_timeout=200, lock_timeout_max=2000), conn)
        assert (capped.lock_timeout, capped.lock_timeout_max) == (150, 150)
        assert [lock_timeout_ms(capped, n) for n in (1, 5)] == [150, 150]
        within = Settings(lock_timeout=20, lock_timeout_max=100)
        assert under_deadlock_timeout(within, conn) == within
