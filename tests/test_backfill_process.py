"""The backfill as users drive it: a real `zdm run` process killed, signalled, paused and resumed
from another terminal, with two workers walking the table.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from zdm_helpers import (
    PHONE_EXPR,
    Background,
    events,
    mismatched_phones,
    named,
    output_of,
    run_row,
    scalar,
    seed,
    start_zdm,
    wait_for,
    wait_gone,
    write_plan,
    zdm,
)

from zdm.engine.backfill import PAUSED

pytestmark = pytest.mark.slow

ROWS = 20_000


def plan_file(tmp_path: Path, **backfill: Any) -> Path:
    """Add a phone column and backfill it slowly enough to be caught in the act: 2 workers."""
    options = {"batch_size": 200, "pause": "30ms", "workers": 2, **backfill}
    return write_plan(
        tmp_path / "bf.yaml",
        {
            "version": 1,
            "name": "bf",
            "phases": {
                "additive": [
                    {"add_column": {"table": "users", "column": {"name": "phone", "type": "text"}}}
                ],
                "dual_write": [{"dual_write": {"table": "users", "set": {"phone": PHONE_EXPR}}}],
                "backfill": [{"backfill": {"table": "users", **options}}],
            },
        },
    )


def run_args(plan: Path, dsn: str) -> list[str]:
    return ["--log-format", "json", "run", str(plan), "--dsn", dsn]


def workers(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    if not scalar(conn, "SELECT to_regclass('zdm.backfills') IS NOT NULL"):
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute("SELECT * FROM zdm.backfills ORDER BY worker").fetchall())


def rows_done(conn: psycopg.Connection[Any]) -> int:
    return sum(w["rows_done"] for w in workers(conn))


def committed_as_checkpointed(conn: psycopg.Connection[Any]) -> None:
    """Each worker's committed rows are exactly those up to its checkpoint, none after it."""
    for w in workers(conn):
        start = None if w["worker"] == 0 else int(workers(conn)[w["worker"] - 1]["end_key"][0])
        last = int(w["last_key"][0]) if w["last_key"] else start
        end = int(w["end_key"][0]) if w["end_key"] else ROWS
        lo = start or 0
        done_rows = scalar(
            conn,
            "SELECT count(*) FROM users WHERE id > %s AND id <= %s AND phone IS NOT NULL",
            [lo, last or lo],
        )
        assert done_rows == w["rows_done"] == w["rows_updated"], w
        assert (
            scalar(
                conn,
                "SELECT count(*) FROM users WHERE id > %s AND id <= %s AND phone IS NOT NULL",
                [last or lo, end],
            )
            == 0
        ), f"worker {w['worker']} has committed rows after its checkpoint"


def ended(proc: Background) -> None:
    """However a test ends, the process is gone and its output files are closed."""
    if not proc.out.closed:
        if proc.proc.poll() is None:
            proc.kill()
        else:
            proc.wait()


@pytest.fixture
def seeded(dsn: str) -> str:
    seed(dsn, ROWS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Counts every update of a row: a row the backfill wrote twice would show 2.
        conn.execute("ALTER TABLE users ADD COLUMN touched int NOT NULL DEFAULT 0")
        conn.execute(
            "CREATE FUNCTION count_touch() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN NEW.touched := OLD.touched + 1; RETURN NEW; END$$"
        )
        conn.execute(
            "CREATE TRIGGER a_count_touch BEFORE UPDATE ON users"
            " FOR EACH ROW EXECUTE FUNCTION count_touch()"
        )
    return dsn


@pytest.fixture
def watcher(dsn: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def test_sigkill_with_two_workers_then_run_again(
    seeded: str, watcher: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = plan_file(tmp_path)
    proc = start_zdm(*run_args(plan, seeded))
    try:
        wait_for(lambda: rows_done(watcher) >= ROWS * 0.3, 60, "30% of the rows", alive=proc)
    finally:
        proc.kill()
    wait_gone(watcher, proc.pid)
    killed = workers(watcher)
    assert len(killed) == 2 and all(not w["done"] for w in killed), killed
    assert all(w["rows_done"] > 0 for w in killed), "both workers should have made progress"
    # A batch and its checkpoint commit together: the in-flight batches left nothing behind.
    committed_as_checkpointed(watcher)

    done = zdm(*run_args(plan, seeded))
    assert done.returncode == 0, output_of(done)
    start = named(events(done.stderr), "backfill_start")
    assert len(start) == 1
    # Each worker resumed right after its own last committed key...
    assert [r["after"] for r in start[0]["ranges"]] == [w["last_key"] for w in killed]
    assert start[0]["rows_done"] == sum(w["rows_done"] for w in killed)
    # ...so every row was walked once and written once, over both processes: of the work the
    # kill interrupted, only the batch each worker had in flight (rolled back) was done again.
    final = workers(watcher)
    assert sum(w["rows_done"] for w in final) == ROWS
    assert sum(w["rows_updated"] for w in final) == ROWS
    assert scalar(watcher, "SELECT max(touched) FROM users") == 1
    assert mismatched_phones(watcher) == 0
    assert run_row(watcher, "bf")["status"] == "completed"


def test_pause_and_resume_from_another_terminal(
    seeded: str, watcher: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # Slow enough that the walk is still going when a second `zdm` process starts on a busy host.
    plan = plan_file(tmp_path, pause="100ms")
    proc = start_zdm(*run_args(plan, seeded))
    try:
        wait_for(lambda: rows_done(watcher) >= 2000, 60, "progress", alive=proc)
        paused = zdm("pause", plan, "--dsn", seeded)
        assert paused.returncode == 0, output_of(paused)
        assert "pause requested for plan bf" in paused.stderr
        wait_for(lambda: run_row(watcher, "bf")["status"] == "paused", 10, "paused", alive=proc)
        time.sleep(0.3)  # the batches in flight when the pause came commit
        held = rows_done(watcher)
        assert held < ROWS
        time.sleep(1.0)
        assert rows_done(watcher) == held, "the walk went on while paused"

        status = zdm("status", plan, "--dsn", seeded, "--json")
        assert status.returncode == 0, output_of(status)
        entry = json.loads(status.stdout)[0]
        assert entry["status"] == "paused" and entry["waiting_for"] == "zdm pause"
        step = entry["backfill_steps"][0]
        assert step["throttle"] == PAUSED and step["rows_done"] == held
        assert step["workers"] == 2 and step["rows_estimated"] == ROWS
        text = zdm("status", plan, "--dsn", seeded)
        assert "paused" in text.stdout and "waiting: paused by `zdm pause`" in text.stdout
        assert f"/ ~{ROWS:,} rows" in text.stdout and "worker 1:" in text.stdout

        resumed = zdm("resume", plan, "--dsn", seeded)
        assert resumed.returncode == 0, output_of(resumed)
        wait_for(lambda: rows_done(watcher) > held, 10, "the walk to go on", alive=proc)
        assert run_row(watcher, "bf")["status"] in ("running", "completed")
        done = proc.wait(60)
    finally:
        ended(proc)
    assert done.returncode == 0, output_of(done)
    names = [e["event"] for e in events(done.stderr)]
    assert "backfill_paused" in names and "backfill_resumed" in names
    assert mismatched_phones(watcher) == 0
    assert run_row(watcher, "bf")["status"] == "completed"


def test_sigterm_stops_after_the_current_batch_and_run_resumes(
    seeded: str, watcher: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = plan_file(tmp_path)
    proc = start_zdm(*run_args(plan, seeded))
    try:
        wait_for(lambda: rows_done(watcher) >= 3000, 60, "progress", alive=proc)
        proc.proc.send_signal(signal.SIGTERM)
        stopped = proc.wait(30)
    finally:
        ended(proc)
    assert stopped.returncode == 1, output_of(stopped)
    assert "paused" in stopped.stderr and "zdm run` resumes" in stopped.stderr
    assert named(events(stopped.stderr), "run_interrupted")[0]["signal"] == "SIGTERM"
    run = run_row(watcher, "bf")
    assert run["status"] == "paused" and run["waiting_for"] == "interrupted by SIGTERM"
    stopped_at = workers(watcher)
    assert rows_done(watcher) < ROWS
    committed_as_checkpointed(watcher)

    done = zdm(*run_args(plan, seeded))
    assert done.returncode == 0, output_of(done)
    start = named(events(done.stderr), "backfill_start")[0]
    assert [r["after"] for r in start["ranges"]] == [w["last_key"] for w in stopped_at]
    assert sum(w["rows_done"] for w in workers(watcher)) == ROWS
    assert mismatched_phones(watcher) == 0
    assert scalar(watcher, "SELECT max(touched) FROM users") == 1


def test_sigterm_while_paused_leaves_the_run_paused(
    seeded: str, watcher: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # Slow enough that the walk is still going when a second `zdm` process starts on a busy host.
    plan = plan_file(tmp_path, pause="100ms")
    proc = start_zdm(*run_args(plan, seeded))
    try:
        wait_for(lambda: rows_done(watcher) >= 1000, 60, "progress", alive=proc)
        assert zdm("pause", plan, "--dsn", seeded).returncode == 0
        wait_for(lambda: run_row(watcher, "bf")["status"] == "paused", 10, "paused", alive=proc)
        proc.proc.send_signal(signal.SIGTERM)
        stopped = proc.wait(30)
    finally:
        ended(proc)
    assert stopped.returncode == 1, output_of(stopped)
    run = run_row(watcher, "bf")
    assert run["status"] == "paused" and run["waiting_for"] == "interrupted by SIGTERM"
    assert {w["throttle"] for w in workers(watcher)} == {None}
    # `zdm run` goes on only once the pause request is lifted.
    assert zdm("resume", plan, "--dsn", seeded).returncode == 0
    done = zdm(*run_args(plan, seeded))
    assert done.returncode == 0, output_of(done)
    assert mismatched_phones(watcher) == 0
