"""The life of a run as users drive it from the command line: gates, --until, a changed plan file,
a failed verify, status, where the DSN comes from, and that no password is ever printed.

Every command runs as a real `zdm` process; exit codes, stdout (data) and stderr (messages) are
what a deploy pipeline would see.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from zdm_helpers import (
    add_phone,
    final_catalog_problems,
    mismatched_phones,
    output_of,
    run_row,
    scalar,
    seed,
    write_plan,
    zdm,
)

ROWS = 2_000
SECRET = "s3cret"


@pytest.fixture
def seeded(dsn: str) -> str:
    seed(dsn, ROWS)
    return dsn


@pytest.fixture
def watcher(seeded: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(seeded, autocommit=True) as conn:
        yield conn


def plan_at(tmp_path: Path, **changes: Any) -> Path:
    return write_plan(tmp_path / "add_phone.yaml", add_phone(**changes))


def ok(*args: Any, env: dict[str, str] | None = None) -> Any:
    """Runs zdm and requires exit 0 and no traceback."""
    done = zdm(*args, env=env)
    assert done.returncode == 0, output_of(done)
    assert "Traceback" not in done.stderr
    return done


def status_json(dsn: str) -> dict[str, Any]:
    done = ok("status", "add_phone", "--json", "--dsn", dsn)
    runs = json.loads(done.stdout)  # data, and only data, on stdout
    assert len(runs) == 1
    entry: dict[str, Any] = runs[0]
    return entry


def assert_completed(conn: psycopg.Connection[Any], server_version: int) -> None:
    assert run_row(conn)["status"] == "completed"
    assert mismatched_phones(conn) == 0
    assert final_catalog_problems(conn, server_version) == []


def test_gate_waits_until_continue_and_status_shows_the_backfill(
    seeded: str, watcher: psycopg.Connection[Any], tmp_path: Path, server_version: int
) -> None:
    plan = plan_at(tmp_path, gates=["cleanup"])
    first = ok("run", plan, "--dsn", seeded)
    assert "waiting" in first.stderr and "--continue" in first.stderr
    assert first.stdout == ""

    st = status_json(seeded)
    assert st["status"] == "waiting"
    assert st["waiting_for"] == "gate before cleanup"
    assert st["owner_alive"] is False
    (backfill,) = st["backfills"]
    assert backfill["step"] == "backfill[0]"
    assert backfill["rows_done"] == ROWS
    assert backfill["rows_estimated"] == ROWS
    assert {s["key"]: s["status"] for s in st["steps"]}["cleanup[0]"] == "pending"
    text = ok("status", "--dsn", seeded).stdout
    assert "add_phone" in text and "waiting" in text and "gate before cleanup" in text
    assert re.search(rf"backfill backfill\[0\].*: {ROWS:,} / ~{ROWS:,} rows \(100%\)", text), text

    again = ok("run", plan, "--dsn", seeded)  # no --continue: still waits, changes nothing
    assert "waiting" in again.stderr
    assert scalar(watcher, "SELECT to_regclass('public.idx_users_phone')") is None
    assert run_row(watcher)["steps"]["cleanup[0]"]["status"] == "pending"

    done = ok("run", plan, "--continue", "--dsn", seeded)
    assert "completed" in done.stderr
    assert_completed(watcher, server_version)
    assert run_row(watcher)["gates_passed"] == ["cleanup"]

    # Completed: running it again does nothing, successfully.
    rerun = ok("run", plan, "--dsn", seeded)
    assert "already completed" in rerun.stderr
    assert scalar(watcher, "SELECT count(*) FROM zdm.runs") == 1
    # ... and a changed file of a completed plan is refused: a new change needs its own plan.
    changed = write_plan(plan, add_phone(description="something else"))
    refused = zdm("run", changed, "--dsn", seeded)
    assert refused.returncode == 2, output_of(refused)
    assert "completed" in refused.stderr and "--force" in refused.stderr


def test_until_stops_after_the_phase_and_a_plain_run_continues(
    seeded: str, watcher: psycopg.Connection[Any], tmp_path: Path, server_version: int
) -> None:
    plan = plan_at(tmp_path)
    # The DSN from ZDM_DSN here, from DATABASE_URL below: no --dsn.
    first = ok("run", plan, "--until", "dual_write", env={"ZDM_DSN": seeded})
    assert "waiting" in first.stderr and "dual_write" in first.stderr
    run = run_row(watcher)
    assert run["status"] == "waiting"
    assert run["waiting_for"] == "--until dual_write"
    steps = {k: s["status"] for k, s in run["steps"].items()}
    assert steps["dual_write[0]"] == "done"
    assert steps["backfill[0]"] == "pending"
    assert scalar(watcher, "SELECT count(*) FROM users WHERE phone IS NOT NULL") == 0

    done = ok("run", plan, env={"DATABASE_URL": seeded})
    assert "completed" in done.stderr
    assert_completed(watcher, server_version)
    assert run_row(watcher)["id"] == run["id"]  # the same run, resumed


def test_changed_plan_file_is_refused_unless_forced(
    seeded: str, watcher: psycopg.Connection[Any], tmp_path: Path, server_version: int
) -> None:
    plan = plan_at(tmp_path)
    ok("run", plan, "--until", "additive", "--dsn", seeded)
    changed = add_phone(backfill={"batch_size": 100})
    changed["phases"]["cleanup"].insert(
        1, {"create_index": {"table": "users", "name": "idx_users_email2", "columns": ["email"]}}
    )
    write_plan(plan, changed)

    refused = zdm("run", plan, "--dsn", seeded)
    assert refused.returncode == 2, output_of(refused)
    assert "refused" in refused.stderr
    assert "backfill[0] backfill: changed" in refused.stderr
    assert "cleanup[1] create_index: was cleanup[1] add_check" in refused.stderr
    assert "cleanup[4] drop_dual_write: added" in refused.stderr
    assert "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert run_row(watcher)["status"] == "waiting"  # untouched

    done = ok("run", plan, "--force", "--dsn", seeded)
    assert "completed" in done.stderr
    assert_completed(watcher, server_version)
    assert scalar(watcher, "SELECT to_regclass('public.idx_users_email2') IS NOT NULL")
    kept = run_row(watcher)["steps"]["additive[0]"]
    assert (kept["status"], kept["attempts"]) == ("done", 1)  # kept, not redone
    # Not taken for a column that existed before the run: rollback still drops it.
    assert kept["adopted"] is False
    assert "step_adopted_existing" not in done.stderr


def test_failing_verify_fails_the_run_and_resumes_once_the_data_is_fixed(
    seeded: str, watcher: psycopg.Connection[Any], tmp_path: Path, server_version: int
) -> None:
    watcher.execute("UPDATE users SET contact = '{}' WHERE id IN (7, 8, 9)")  # no phone at all
    plan = plan_at(tmp_path)
    failed = zdm("run", plan, "--dsn", seeded)
    assert failed.returncode == 1, output_of(failed)
    assert "every user has a phone: expected 0, got 3" in failed.stderr
    assert "resumable" in failed.stderr
    run = run_row(watcher)
    assert run["status"] == "failed"
    assert "expected 0, got 3" in run["last_error"]
    verify = run["steps"]["dual_read[0]"]
    assert (verify["status"], verify["attempts"]) == ("failed", 1)
    assert "expected 0, got 3" in verify["last_error"]
    assert run["steps"]["cleanup[0]"]["status"] == "pending"

    text = ok("status", "add_phone", "--dsn", seeded).stdout
    assert "failed" in text and "last error" in text and "expected 0, got 3" in text

    # The team fixes the data (the dual-write trigger fills phone), then resumes.
    watcher.execute(
        'UPDATE users SET contact = \'{"phone": "+1 (555) 010-0000"}\' WHERE id IN (7, 8, 9)'
    )
    done = ok("run", plan, "--dsn", seeded)
    assert "completed" in done.stderr
    run = run_row(watcher)
    assert run["steps"]["dual_read[0]"]["attempts"] == 2
    assert run["steps"]["backfill[0]"]["attempts"] == 1
    assert_completed(watcher, server_version)


def test_dsn_comes_from_the_flag_then_zdm_dsn_then_database_url(seeded: str) -> None:
    bad = "postgresql://nobody@127.0.0.1:1/nowhere"
    envs = [
        ([], {"ZDM_DSN": seeded, "DATABASE_URL": bad}),
        ([], {"DATABASE_URL": seeded}),
        (["--dsn", seeded], {"ZDM_DSN": bad, "DATABASE_URL": bad}),
        ([], {"ZDM_DSN": bad, "DATABASE_URL": seeded}),
    ]
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda c: zdm("status", "--json", *c[0], env=c[1]), envs))
    for ran in done[:3]:
        assert ran.returncode == 0, output_of(ran)
        assert json.loads(ran.stdout) == []  # connected: no runs recorded yet
    failed = done[3]
    assert failed.returncode == 1, output_of(failed)
    assert "cannot connect" in failed.stderr and "127.0.0.1" in failed.stderr
    assert "Traceback" not in failed.stderr


def with_password(dsn: str) -> list[str]:
    """`dsn` with a password, as key=value pairs and as a URI (the servers trust, and ignore it)."""
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    user, db, host = params.get("user", "postgres"), params["dbname"], params.get("host", "")
    port = f":{params['port']}" if "port" in params else ""
    if host.startswith("/"):  # a unix socket directory
        uri = f"postgresql://{user}:{SECRET}@/{db}?host={host}" + (
            f"&port={params['port']}" if port else ""
        )
    else:
        uri = f"postgresql://{user}:{SECRET}@{host}{port}/{db}"
    return [make_conninfo(dsn, password=SECRET), uri]


def test_a_password_never_appears_in_output(seeded: str, tmp_path: Path) -> None:
    plan = plan_at(tmp_path, gates=["cleanup"])
    kv, uri = with_password(seeded)
    # Debug logs print every statement; the run stops at the gate, so it can run twice.
    outputs = [
        ok("--log-level", "debug", "--log-format", "json", "run", plan, "--dsn", kv),
        ok("--log-level", "debug", "run", plan, "--dsn", uri),
    ]
    unreachable = f"host=127.0.0.1 port=1 user=postgres password={SECRET}"
    unreachable_uri = f"postgresql://postgres:{SECRET}@127.0.0.1:1/postgres"
    unparsable = f"host=127.0.0.1 port=1 password={SECRET} junk"
    succeed = [
        (["status", "--dsn", kv], None),
        (["status", "--json", "--dsn", uri], None),
        (["run", plan, "--dry-run", "--dsn", kv], None),
        (["run", plan, "--dry-run"], {"ZDM_DSN": uri}),
        (["validate", plan, "--dsn", kv], None),
    ]
    fail = [
        (["run", plan, "--dsn", unreachable], None),
        (["run", plan, "--dry-run", "--dsn", unreachable_uri], None),
        (["status"], {"DATABASE_URL": unreachable_uri}),
        (["validate", plan, "--dsn", unparsable], None),
    ]
    # Independent commands, run side by side: each is a whole Python process.
    with ThreadPoolExecutor(4) as pool:
        good = list(pool.map(lambda c: zdm(*c[0], env=c[1]), succeed))
        bad = list(pool.map(lambda c: zdm(*c[0], env=c[1]), fail))
    for done in good:
        assert done.returncode == 0, output_of(done)
    for done in bad:
        assert done.returncode in (1, 2), output_of(done)
        assert "Traceback" not in done.stderr, output_of(done)
        assert "cannot connect" in done.stderr or "invalid connection string" in done.stderr
    for done in outputs + good + bad:
        assert SECRET not in done.stdout + done.stderr, output_of(done)
    # Where the password was, the redacted DSN still shows that there was one.
    assert "password=***" in good[2].stdout
