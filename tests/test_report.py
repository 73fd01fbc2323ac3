"""`zdm report`: the record of a real run, read back from the state tables and the catalog."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from zdm_helpers import ADD_PHONE, add_phone, output_of, seed, write_plan, zdm

ROWS = 3_000


@pytest.fixture
def seeded(dsn: str) -> str:
    seed(dsn, ROWS)
    return dsn


def report(dsn: str, *args: str) -> Any:
    done = zdm("report", *args, "--dsn", dsn)
    assert done.returncode == 0, output_of(done)
    return done


def test_json_report_of_a_completed_run(seeded: str) -> None:
    ran = zdm("run", ADD_PHONE, "--dsn", seeded)
    assert ran.returncode == 0, output_of(ran)

    r = json.loads(report(seeded, "add_phone", "--format", "json").stdout)

    assert r["plan"]["name"] == "add_phone"
    assert r["plan"]["sha256"] == hashlib.sha256(ADD_PHONE.read_bytes()).hexdigest()
    assert r["plan"]["path"] == str(ADD_PHONE)
    assert r["plan"]["file_now"] == "unchanged"
    assert r["run"]["status"] == "completed"
    assert r["database"]["server_version_num"] >= 100000
    assert r["database"]["name"] in r["database"]["dsn"]

    # The strategy: every phase and step with its kind, each with a duration.
    phases = {p["phase"]: p for p in r["phases"]}
    assert list(phases) == ["additive", "dual_write", "backfill", "dual_read", "cleanup"]
    kinds = [(s["key"], s["kind"]) for p in r["phases"] for s in p["steps"]]
    assert kinds[:3] == [
        ("additive[0]", "add_column"),
        ("dual_write[0]", "dual_write"),
        ("backfill[0]", "backfill"),
    ]
    assert ("cleanup[2]", "set_not_null") in kinds
    for p in r["phases"]:
        assert p["duration_s"] is not None and p["duration_s"] >= 0
        for s in p["steps"]:
            assert s["status"] == "done" and s["duration_s"] >= 0
    assert phases["additive"]["steps"][0]["fields"]["column"]["name"] == "phone"

    # Statements run: the exact SQL, its lock and how long it held it.
    add = next(s for s in r["statements"] if s["step"] == "additive[0]")
    assert add["lock"] == "ACCESS EXCLUSIVE" and add["blocks_app"] is True
    assert add["sql"] == ['ALTER TABLE "public"."users" ADD COLUMN "phone" varchar(20)']
    index = next(s for s in r["statements"] if s["step"] == "cleanup[0]")
    assert "CONCURRENTLY" in index["sql"][0] and index["blocks_app"] is False

    # Measured downtime: the longest unit holding an app-blocking lock.
    blocking = [s for s in r["statements"] if s["blocks_app"]]
    assert r["downtime"]["max_ms"] == max(s["held_ms"] for s in blocking)
    assert r["downtime"]["unit"] in {s["unit"] for s in blocking}
    assert r["downtime"]["max_ms"] < 2000

    # Rows backfilled and integrity checks.
    (bf,) = r["backfills"]
    assert bf["rows_done"] == ROWS and bf["rows_updated"] == ROWS and bf["done"]
    (verify,) = r["integrity"]["verify"]
    assert verify["ok"] is True and verify["value"] == 0 and verify["step"] == "dual_read[0]"
    validated = {c["constraint"]: c["now"] for c in r["integrity"]["constraints_validated"]}
    assert validated["check_phone_format"] == "validated"
    assert [i["now"] for i in r["integrity"]["indexes_built"]] == ["valid"]
    assert r["integrity"]["backfills_proven_complete"] == ["backfill[0]"]
    assert r["lock_waits"] == []


def test_a_rolled_back_run_keeps_its_steps_forward_durations(seeded: str) -> None:
    ran = zdm("run", ADD_PHONE, "--dsn", seeded)
    assert ran.returncode == 0, output_of(ran)
    before = json.loads(report(seeded, "add_phone", "--format", "json").stdout)
    undone = zdm("rollback", ADD_PHONE, "--dsn", seeded)
    assert undone.returncode == 0, output_of(undone)

    after = json.loads(report(seeded, "add_phone", "--format", "json").stdout)

    assert after["run"]["status"] == "rolled_back"
    steps = {s["key"]: s for p in after["phases"] for s in p["steps"]}
    assert {s["status"] for s in steps.values()} == {"rolled_back"}
    # Each step's duration is still that of the migration, not stretched to the rollback.
    for p in before["phases"]:
        for s in p["steps"]:
            assert steps[s["key"]]["finished_at"] == s["finished_at"]
            assert steps[s["key"]]["duration_s"] == s["duration_s"]


def test_markdown_report_names_hash_steps_statements_and_downtime(seeded: str) -> None:
    ran = zdm("run", ADD_PHONE, "--dsn", seeded)
    assert ran.returncode == 0, output_of(ran)

    # No plan argument: the latest run of any plan. A plan file names its plan too.
    latest = report(seeded).stdout
    by_file = report(seeded, str(ADD_PHONE)).stdout
    assert latest.splitlines()[0] == by_file.splitlines()[0]
    text = latest

    assert text.startswith("# Migration record: plan `add_phone`, run 1")
    assert hashlib.sha256(ADD_PHONE.read_bytes()).hexdigest() in text
    assert "PostgreSQL" in text
    assert "| additive[0] | add_column |" in text
    assert "| cleanup[2] | set_not_null |" in text
    assert '`ALTER TABLE "public"."users" ADD COLUMN "phone" varchar(20)`' in text
    assert "**Measured downtime:**" in text and "held (or queued for) a lock" in text
    assert f"| backfill[0] | {ROWS:,} | {ROWS:,} |" in text
    assert "verify: every user has a phone" in text and "| pass |" in text
    assert "## Lock waits and retries" in text


def test_report_names_who_blocked_the_run(seeded: str, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "add_phone.yaml", add_phone(gates=[]))
    holding = threading.Event()
    pid: list[int] = []

    def blocker() -> None:
        # A running statement that holds ACCESS SHARE on users until 2 s after zdm connected
        # (a zdm that starts slowly on a loaded machine must still find it there).
        with psycopg.connect(seeded) as conn, psycopg.connect(seeded, autocommit=True) as watch:
            pid.append(conn.info.backend_pid)
            conn.execute("LOCK TABLE users IN ACCESS SHARE MODE")
            holding.set()
            deadline = time.monotonic() + 60
            while (
                time.monotonic() < deadline
                and not watch.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'zdm run %'"
                ).fetchone()
            ):
                time.sleep(0.01)
            conn.execute("SELECT pg_sleep(2)")

    thread = threading.Thread(target=blocker, daemon=True)
    thread.start()
    assert holding.wait(10)
    ran = zdm("run", plan, "--dsn", seeded)
    thread.join()
    assert ran.returncode == 0, output_of(ran)

    r = json.loads(report(seeded, "add_phone", "--format", "json").stdout)
    waits = r["lock_waits"]
    assert waits, r
    named = {s["pid"] for w in waits for s in (w.get("blockers") or w.get("holders") or [])}
    assert pid[0] in named
    assert {w["unit"] for w in waits} == {"add column phone"}
    assert f"pid {pid[0]}" in report(seeded, "add_phone").stdout


def test_exit_2_without_a_run(seeded: str) -> None:
    nothing = zdm("report", "--dsn", seeded)
    assert nothing.returncode == 2, output_of(nothing)
    assert "no run" in nothing.stderr and nothing.stdout == ""

    ran = zdm("run", ADD_PHONE, "--dsn", seeded)
    assert ran.returncode == 0, output_of(ran)
    other = zdm("report", "some_other_plan", "--dsn", seeded)
    assert other.returncode == 2, output_of(other)
    assert "some_other_plan" in other.stderr

    bad = zdm("report", "--format", "yaml", "--dsn", seeded)
    assert bad.returncode == 2 and "markdown" in bad.stderr


def test_password_never_appears(seeded: str) -> None:
    ran = zdm("run", ADD_PHONE, "--dsn", seeded)
    assert ran.returncode == 0, output_of(ran)
    with_password = f"{seeded} password=s3cret-pw"
    done = zdm("report", "--format", "json", "--dsn", with_password)
    assert done.returncode == 0, output_of(done)
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert "password=***" in json.loads(done.stdout)["database"]["dsn"]
