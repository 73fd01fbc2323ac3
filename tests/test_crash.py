"""Crash tests: SIGKILL a real `zdm run` at random moments, resume it, and prove nothing was lost.

What users rely on: "it can be killed at any instant and resumed with nothing lost and nothing
done twice". Each case kills the process with SIGKILL (no handler runs, no bookkeeping, the
server finds out only when it next talks to the dead client), resumes with a plain `zdm run`,
and then checks every row's phone against its expected value and the final catalog.

Kill points:
- backfill: twice, at random checkpoints; after each kill the table holds exactly the rows of
  the committed batches (a batch and its checkpoint commit together), and the next run resumes
  after the last committed key — at the end rows_done == rows_updated == table rows, so no row
  was walked twice (the in-flight batch was rolled back, not counted, and redone);
- create_index: while CREATE INDEX CONCURRENTLY waits for an old snapshot; the orphaned build
  is then terminated (as a DBA or client_connection_check_interval would), leaving an INVALID
  index that the resume must drop and rebuild;
- create_index, resumed at once: the orphaned build still runs when the new process starts (a
  Kubernetes job restarting its pod); zdm's sessions set client_connection_check_interval, so
  the server cancels the orphan within seconds; the resume waits, taking no lock, while the
  build is in progress, then drops and rebuilds the INVALID index it left (dropping it under a
  build still running failed on PostgreSQL 15 with "tuple concurrently updated"); a build of the
  same name by another session that succeeds is kept, not dropped;
- validate: while VALIDATE CONSTRAINT is scanning (held on an advisory lock taken by the check
  expression: a stand-in for a long scan on a big table); the resume starts at once, queues
  behind the orphaned VALIDATE, which rolls back when it finds its client gone;
- cleanup_random: at a random moment of the cleanup phase (create_index, add_check,
  set_not_null with its helper check, drop_dual_write); where it landed is printed.

The random kill points come from ZDM_CRASH_SEED (printed), so a failure can be replayed.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
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
    wait_gone,
    write_plan,
    zdm,
    zdm_backends,
)

pytestmark = pytest.mark.slow

ROWS = 40_000  # the backfill case: 100 batches of 400 rows, 5ms apart
BATCH = 400
CLEANUP_ROWS = 20_000  # the cleanup cases: a quick auto-sized backfill, then the kill
HOOK_LOCK = 4242
SEED = int(os.environ.get("ZDM_CRASH_SEED") or random.randrange(1_000_000))


@pytest.fixture
def rng() -> random.Random:
    print(f"ZDM_CRASH_SEED={SEED}")
    return random.Random(SEED)


@pytest.fixture
def seeded(dsn: str) -> str:
    seed(dsn, ROWS)
    return dsn


@pytest.fixture
def small(dsn: str) -> str:
    seed(dsn, CLEANUP_ROWS)
    return dsn


@pytest.fixture
def watcher(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """The test's own session: polls zdm's state and the catalog while zdm runs."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def plan_file(tmp_path: Path, check: str | None = None, *, slow_backfill: bool = False) -> Path:
    plan = add_phone(backfill={"batch_size": BATCH, "pause": "5ms"} if slow_backfill else {})
    if check is not None:
        plan["phases"]["cleanup"][1]["add_check"]["check"] = check
    return write_plan(tmp_path / "add_phone.yaml", plan)


def run_args(plan: Path, dsn: str) -> list[str]:
    return ["--log-format", "json", "run", str(plan), "--dsn", dsn]


def waiting_in(conn: psycopg.Connection[Any], pid: int, statement: str) -> list[int]:
    """Backends of zdm process `pid` waiting for a lock inside a statement containing `statement`."""
    return [
        backend
        for backend, _state, query in zdm_backends(conn, pid)
        if statement in query
        and scalar(
            conn,
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
            [backend],
        )
    ]


def checkpoint(conn: psycopg.Connection[Any]) -> tuple[list[str] | None, int, int] | None:
    if not scalar(conn, "SELECT to_regclass('zdm.backfills') IS NOT NULL"):
        return None
    row = conn.execute("SELECT last_key, rows_done, rows_updated FROM zdm.backfills").fetchone()
    return (row[0], int(row[1]), int(row[2])) if row else None


def kill_in_backfill(
    plan: Path, dsn: str, conn: psycopg.Connection[Any], at_rows: int
) -> tuple[list[str], int, int]:
    """Runs zdm, kills it once the backfill has committed `at_rows` rows; returns its checkpoint."""
    proc = start_zdm(*run_args(plan, dsn))
    try:
        wait_for(
            lambda: (cp := checkpoint(conn)) is not None and cp[1] >= at_rows,
            60,
            f"the backfill to pass {at_rows} rows",
            alive=proc,
        )
    finally:
        proc.kill()
    wait_gone(conn, proc.pid)
    cp = checkpoint(conn)
    assert cp is not None and cp[0] is not None
    last_key, rows_done, rows_updated = cp
    assert rows_done < ROWS, "the backfill finished before the kill: make it slower"
    # A batch and its checkpoint commit together: the rows with a phone are exactly the rows
    # the checkpoint counts, up to the checkpoint's key. The in-flight batch left nothing.
    assert scalar(conn, "SELECT count(*) FROM users WHERE phone IS NOT NULL") == rows_done
    assert scalar(conn, "SELECT max(id) FROM users WHERE phone IS NOT NULL") == int(last_key[0])
    assert rows_updated == rows_done
    assert run_row(conn)["status"] == "running"  # the dead owner left it so
    return last_key, rows_done, rows_updated


def resumed_from(stderr: str) -> dict[str, Any]:
    starts = named(events(stderr), "backfill_start")
    assert len(starts) == 1, stderr
    return starts[0]


def finish(plan: Path, dsn: str) -> subprocess.CompletedProcess[str]:
    done = zdm(*run_args(plan, dsn))
    assert done.returncode == 0, output_of(done)
    assert "completed" in done.stderr
    return done


def assert_all_correct(conn: psycopg.Connection[Any], server_version: int, rows: int) -> None:
    assert mismatched_phones(conn) == 0
    assert scalar(conn, "SELECT count(*) FROM users") == rows
    assert final_catalog_problems(conn, server_version) == []
    run = run_row(conn)
    assert run["status"] == "completed"
    assert {s["status"] for s in run["steps"].values()} == {"done"}


def test_kill_during_backfill_twice(
    seeded: str,
    watcher: psycopg.Connection[Any],
    tmp_path: Path,
    rng: random.Random,
    server_version: int,
) -> None:
    plan = plan_file(tmp_path, slow_backfill=True)
    first_kill = rng.randrange(2_000, 15_000)
    second_kill = rng.randrange(first_kill + 6_000, 32_000)
    print(f"kills after {first_kill} and {second_kill} rows")

    _key1, done1, _ = kill_in_backfill(plan, seeded, watcher, first_kill)
    # The second run resumes after the first one's last committed key, with its count.
    proc = start_zdm(*run_args(plan, seeded))
    try:
        wait_for(
            lambda: (cp := checkpoint(watcher)) is not None and cp[1] >= second_kill,
            60,
            f"the backfill to pass {second_kill} rows",
            alive=proc,
        )
    finally:
        proc.kill()
    wait_gone(watcher, proc.pid)
    key2, done2, _ = checkpoint(watcher) or (None, 0, 0)
    assert key2 is not None and done2 < ROWS
    assert scalar(watcher, "SELECT count(*) FROM users WHERE phone IS NOT NULL") == done2

    done = finish(plan, seeded)
    start = resumed_from(done.stderr)
    assert start["resume_after"] == key2
    assert start["rows_done"] == done2
    assert done1 < done2

    # Every row walked exactly once over three processes: the batches in flight at the two
    # kills were rolled back and not counted, and no range was walked again.
    last_key, rows_done, rows_updated = checkpoint(watcher) or (None, 0, 0)
    assert (rows_done, rows_updated) == (ROWS, ROWS)
    assert last_key == [str(ROWS)]
    assert named(events(done.stderr), "backfill_second_pass") == []
    assert_all_correct(watcher, server_version, ROWS)


def test_kill_during_create_index_concurrently(
    small: str, watcher: psycopg.Connection[Any], tmp_path: Path, server_version: int
) -> None:
    plan = plan_file(tmp_path)
    # An old snapshot in the same database: CREATE INDEX CONCURRENTLY waits for it to end.
    with psycopg.connect(small) as blocker:
        blocker.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        blocker.execute("SELECT 1").fetchone()  # a snapshot, and no lock on users
        proc = start_zdm(*run_args(plan, small))
        try:
            building = wait_for(
                lambda: waiting_in(watcher, proc.pid, "CREATE INDEX CONCURRENTLY"),
                60,
                "CREATE INDEX CONCURRENTLY to wait for the old snapshot",
                interval=0.05,
                alive=proc,
            )
        finally:
            proc.kill()
        # The orphaned build would go on until the snapshot ends; end it as a DBA would.
        watcher.execute("SELECT pg_terminate_backend(%s)", [building[0]])
        wait_gone(watcher, proc.pid)
        assert (
            scalar(
                watcher,
                "SELECT indisvalid FROM pg_index WHERE indexrelid ="
                " to_regclass('public.idx_users_phone')",
            )
            is False
        ), "the killed build should have left an INVALID index"
        assert run_row(watcher)["steps"]["cleanup[0]"]["status"] == "running"
        blocker.rollback()

    done = finish(plan, small)
    units = [e["unit"] for e in named(events(done.stderr), "unit_done")]
    assert "drop invalid index idx_users_phone" in units
    assert "build index idx_users_phone" in units
    assert_all_correct(watcher, server_version, CLEANUP_ROWS)


def test_resume_at_once_while_the_killed_index_build_still_runs(
    small: str,
    watcher: psycopg.Connection[Any],
    tmp_path: Path,
    server_version: int,
    request: pytest.FixtureRequest,
) -> None:
    """What a Kubernetes job does: the pod dies, a new one runs `zdm run` straight away."""
    plan = plan_file(tmp_path)
    with psycopg.connect(small) as blocker:
        blocker.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        blocker.execute("SELECT 1").fetchone()
        proc = start_zdm(*run_args(plan, small))
        try:
            wait_for(
                lambda: waiting_in(watcher, proc.pid, "CREATE INDEX CONCURRENTLY"),
                60,
                "CREATE INDEX CONCURRENTLY to wait for the old snapshot",
                interval=0.05,
                alive=proc,
            )
        finally:
            proc.kill()
        # The orphaned build goes on (the server has not noticed its client died).
        resume = start_zdm(*run_args(plan, small))
        wait_for(
            lambda: waiting_in(watcher, resume.pid, "INDEX CONCURRENTLY"),
            60,
            "the resumed run to meet the orphaned build",
            interval=0.05,
            alive=resume,
        )
        blocker.rollback()
        resumed = resume.wait()
    assert resumed.returncode == 0, output_of(resumed)
    units = [e["unit"] for e in named(events(resumed.stderr), "unit_done")]
    print(f"the resume ran {units}")
    assert_all_correct(watcher, server_version, CLEANUP_ROWS)


def test_an_index_another_session_is_building_is_waited_for_not_dropped(
    small: str, watcher: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """An index of the step's name is INVALID while a build of it is in progress (a killed run's,
    or anyone's): zdm waits for the build and keeps the index it makes, instead of dropping it
    under the builder (PostgreSQL 15 failed that DROP with "tuple concurrently updated")."""
    name = "idx_users_email_built_elsewhere"
    step = {"create_index": {"table": "users", "name": name, "columns": ["email"]}}
    plan = write_plan(
        tmp_path / "index.yaml", {"version": 1, "name": "index", "phases": {"cleanup": [step]}}
    )
    building = (
        "SELECT EXISTS (SELECT 1 FROM pg_stat_progress_create_index"
        f" WHERE index_relid = to_regclass('{name}'))"
    )
    with (
        psycopg.connect(small) as old_snapshot,
        psycopg.connect(small, autocommit=True) as builder,
    ):
        old_snapshot.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        old_snapshot.execute("SELECT 1").fetchone()
        build = threading.Thread(
            target=builder.execute, args=(f"CREATE INDEX CONCURRENTLY {name} ON users (email)",)
        )
        build.start()
        try:
            wait_for(lambda: scalar(watcher, building), 30, "the other build to wait")
            proc = start_zdm(*run_args(plan, small))
            wait_for(
                lambda: (
                    scalar(watcher, "SELECT to_regclass('zdm.steps') IS NOT NULL")
                    and scalar(
                        watcher,
                        "SELECT EXISTS (SELECT 1 FROM zdm.steps s JOIN zdm.runs r ON r.id = s.run_id"
                        " WHERE r.plan = 'index' AND s.status = 'running')",
                    )
                ),
                60,
                "zdm at the create_index step",
                alive=proc,
            )
            time.sleep(1)  # zdm meets the build in progress
        finally:
            old_snapshot.rollback()  # the build goes on and ends
            build.join(60)
        done = proc.wait()
    assert done.returncode == 0, output_of(done)
    evts = events(done.stderr)
    assert [e["reason"] for e in named(evts, "waiting")] == [
        f"another session builds index {name}"
    ], output_of(done)
    assert not named(evts, "unit_done"), output_of(done)  # nothing dropped, nothing rebuilt
    assert scalar(
        watcher, f"SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('{name}')"
    )


def test_kill_during_validate(
    small: str, watcher: psycopg.Connection[Any], tmp_path: Path, server_version: int
) -> None:
    # The check calls a function that waits for an advisory lock the test holds: VALIDATE
    # stays in its scan, deterministically, as it would on a table of a billion rows.
    watcher.execute(
        "CREATE FUNCTION public.crash_test_hold() RETURNS boolean LANGUAGE plpgsql AS"
        f" $$BEGIN PERFORM pg_advisory_xact_lock_shared({HOOK_LOCK}); RETURN true; END$$"
    )
    plan = plan_file(tmp_path, check="phone ~ '^\\+?[0-9]{10,15}$' AND crash_test_hold()")
    with psycopg.connect(small, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [HOOK_LOCK])
        proc = start_zdm(*run_args(plan, small))

        try:
            wait_for(
                lambda: waiting_in(watcher, proc.pid, "VALIDATE CONSTRAINT"),
                60,
                "VALIDATE CONSTRAINT to scan",
                interval=0.05,
                alive=proc,
            )
        finally:
            proc.kill()
        assert run_row(watcher)["steps"]["cleanup[1]"]["status"] == "running"
        # Resume at once: the orphaned VALIDATE still holds its lock; the resume queues behind
        # it (a SHARE UPDATE EXCLUSIVE statement may wait) until the orphan finds its client
        # gone and rolls back.
        resume = start_zdm(*run_args(plan, small))
        wait_for(
            lambda: any(
                "VALIDATE CONSTRAINT" in query
                for _p, _s, query in zdm_backends(watcher, resume.pid)
            ),
            60,
            "the resumed run to reach VALIDATE",
            interval=0.05,
            alive=resume,
        )
        assert (
            scalar(
                watcher,
                "SELECT convalidated FROM pg_constraint WHERE conname = 'check_phone_format'",
            )
            is False
        )
        holder.execute("SELECT pg_advisory_unlock(%s)", [HOOK_LOCK])
        resumed = resume.wait()
    assert resumed.returncode == 0, output_of(resumed)
    skipped = [e["unit"] for e in named(events(resumed.stderr), "already_done")]
    assert "add constraint check_phone_format (not valid)" in skipped
    assert_all_correct(watcher, server_version, CLEANUP_ROWS)


def test_kill_at_random_moment_of_cleanup(
    small: str,
    watcher: psycopg.Connection[Any],
    tmp_path: Path,
    rng: random.Random,
    server_version: int,
) -> None:
    plan = plan_file(tmp_path)
    # The whole cleanup of 20k rows takes about 50 ms on a quiet host (200 ms on a loaded one):
    # a kill later than that would find the run already done.
    delay = rng.uniform(0, 0.04)
    proc = start_zdm(*run_args(plan, small))
    try:
        wait_for(
            lambda: (
                scalar(watcher, "SELECT to_regclass('zdm.runs') IS NOT NULL")
                and scalar(
                    watcher, "SELECT EXISTS (SELECT 1 FROM zdm.runs WHERE phase = 'cleanup')"
                )
            ),
            60,
            "the cleanup phase",
            interval=0.002,
            alive=proc,
        )
        time.sleep(delay)
    finally:
        proc.kill()
    wait_gone(watcher, proc.pid)
    run = run_row(watcher)
    landed = {k: s["status"] for k, s in run["steps"].items() if k.startswith("cleanup")}
    helpers = watcher.execute(
        "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'users'::regclass"
    ).fetchall()
    print(f"killed {delay * 1000:.0f}ms into cleanup: steps {landed}; constraints {helpers}")
    finish(plan, small)
    assert_all_correct(watcher, server_version, CLEANUP_ROWS)


DEFAULTS_PLAN = """\
version: 1
name: defaults
settings: {lock_timeout: 100ms, lock_timeout_max: 500ms, retry_max_wait: 200ms}
phases:
  additive:
    - set_default: {table: t, column: v, default: '42'}
"""


def test_kill_before_set_default_keeps_the_default_it_replaces(
    dsn: str, watcher: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The default a step replaces is recorded once, before its first attempt, and a resume
    never records another: not even when it finds the step's own default in place."""
    watcher.execute("CREATE TABLE t (id int PRIMARY KEY, v int DEFAULT 7)")
    plan = tmp_path / "defaults.yaml"
    plan.write_text(DEFAULTS_PLAN)
    # A transaction of the application sits on the table: zdm waits for it to end before it
    # takes its lock (it never queues behind one), its record already made. It is killed there.
    with psycopg.connect(dsn) as app:
        app.execute("SELECT * FROM t").fetchall()
        proc = start_zdm("--log-format", "json", "run", plan, "--dsn", dsn)
        try:
            wait_for(
                lambda: (
                    scalar(watcher, "SELECT to_regclass('zdm.events') IS NOT NULL")
                    and scalar(
                        watcher,
                        "SELECT EXISTS (SELECT 1 FROM zdm.events WHERE event = 'long_holder_wait')",
                    )
                ),
                60,
                "zdm to wait for the application's transaction",
                alive=proc,
            )
        finally:
            proc.kill()
        wait_gone(watcher, proc.pid)
        app.rollback()

    def default() -> Any:
        return scalar(
            watcher,
            "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 't'::regclass",
        )

    step = run_row(watcher, "defaults")["steps"]["additive[0]"]
    assert (step["status"], step["attempts"], step["remembered"]) == (
        "running",
        1,
        {"default": "7"},
    )
    assert default() == "7"

    # As if the step's statement had committed and the process died before its bookkeeping:
    # the resume finds the new default in place, and must not take it for the old one.
    watcher.execute("ALTER TABLE t ALTER COLUMN v SET DEFAULT 42")
    finish_defaults = zdm("run", plan, "--dsn", dsn)
    assert finish_defaults.returncode == 0, output_of(finish_defaults)
    step = run_row(watcher, "defaults")["steps"]["additive[0]"]
    assert (step["status"], step["attempts"], step["remembered"]) == ("done", 2, {"default": "7"})

    shown = zdm("rollback", plan, "--dry-run", "--dsn", dsn)
    assert shown.returncode == 0, output_of(shown)
    assert 'ALTER TABLE "public"."t" ALTER COLUMN "v" SET DEFAULT 7;' in shown.stdout
    undone = zdm("rollback", plan, "--dsn", dsn)
    assert undone.returncode == 0, output_of(undone)
    assert default() == "7"
