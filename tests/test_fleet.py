"""Fleet rollouts (DBOS): canary, waves, stop at a failure, SIGKILL of the orchestrator, resume.

20 databases on the test server; target 07 (wave 2) holds the orchestrator in VALIDATE on an
advisory lock the test holds, target 12 (wave 3) lacks the column the backfill reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from zdm_helpers import add_phone, output_of, seed, start_zdm, wait_for, write_plan, zdm

from zdm.demo.testing import create_database, drop_database, unique_name

pytest.importorskip("dbos")

HOLD = 4243
N = 20
HELD, BROKEN = 7, 12


@pytest.fixture
def fleet(pg_admin_dsn: str) -> Iterator[list[str]]:
    names = [unique_name("zdm_f_") for _ in range(N)]
    dsns = [create_database(pg_admin_dsn, n) for n in names]
    try:
        yield dsns
    finally:
        for n in names:
            drop_database(pg_admin_dsn, n)


def waiting_on_hold(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'zdm%%'"
            " AND wait_event_type = 'Lock' AND query LIKE '%%VALIDATE%%'"
        ).fetchone()
        return bool(row and row[0])


def test_rollout_canary_waves_stop_crash_resume(fleet: list[str], tmp_path: Path) -> None:
    for i, dsn in enumerate(fleet):
        seed(dsn, 50)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(
                "CREATE FUNCTION public.fleet_hold() RETURNS boolean LANGUAGE plpgsql AS"
                f" $$BEGIN PERFORM pg_advisory_xact_lock_shared({HOLD}); RETURN true; END$$"
            )
            if i == BROKEN:
                c.execute("ALTER TABLE users RENAME COLUMN contact TO contact_old")
    plan = add_phone()
    plan["phases"]["cleanup"][1]["add_check"]["check"] += " AND fleet_hold()"
    plan_path = write_plan(tmp_path / "add_phone.yaml", plan)
    targets = tmp_path / "targets.txt"
    targets.write_text("# the fleet\n" + "".join(d + "\n" for d in fleet))
    env = {"ZDM_FLEET_STATE": str(tmp_path / "state"), "ZDM_FLEET_WAVE": "5"}
    args = ("run", plan_path, "--targets", targets)

    with psycopg.connect(fleet[HELD], autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [HOLD])
        first = start_zdm(*args, env=env)
        wait_for(
            lambda: waiting_on_hold(fleet[HELD]),
            120,
            "target 07 in VALIDATE",
            interval=0.1,
            alive=first,
        )
        killed = first.kill()  # SIGKILL: no handler runs
        holder.execute("SELECT pg_advisory_unlock(%s)", [HOLD])
    print(killed.stderr)
    assert "canary: " in killed.stderr and "wave 2: launching" in killed.stderr
    assert "wave 3" not in killed.stderr

    resumed = zdm(*args, env=env, timeout=300)
    print(resumed.stderr)
    assert resumed.returncode == 1, output_of(resumed)
    assert "resuming rollout" in resumed.stderr
    assert "wave 3: launching" in resumed.stderr
    assert "stopped after wave 3: 1 failed; 4 targets not launched" in resumed.stderr
    assert "wave 4" not in resumed.stderr
    # The canary and wave 1 are replayed from DBOS's record, not run again: zdm started at most
    # wave 2's five (07 resumed, the rest if still queued at the kill) and wave 3's five.
    assert 6 <= resumed.stderr.count(" run_start ") <= 10, resumed.stderr

    table = zdm("status", "--targets", targets)
    print(table.stdout)
    assert table.returncode == 0, output_of(table)
    rows = json.loads(zdm("status", "--targets", targets, "--json").stdout)
    by = [r["status"] for r in rows]
    assert by[:BROKEN] == ["completed"] * BROKEN
    # Target 12's plan names a column its table lacks: refused before anything was created
    # there (exit 2), so it has no run of its own; the rollout names the error.
    assert by[BROKEN] == "not started"
    assert 'column "contact" does not exist' in resumed.stderr
    assert by[BROKEN + 1 : 16] == ["completed"] * 3
    assert by[16:] == ["not started"] * 4
    assert all("password" not in json.dumps(r) for r in rows)
    checked: list[Any] = []
    with psycopg.connect(fleet[HELD], autocommit=True) as c:
        checked.append(c.execute("SELECT count(*) FROM users WHERE phone IS NULL").fetchone())
    assert checked == [(0,)]

    # Again after the fix: a new attempt skips the done targets and finishes the rest.
    with psycopg.connect(fleet[BROKEN], autocommit=True) as c:
        c.execute("ALTER TABLE users RENAME COLUMN contact_old TO contact")
    again = zdm(*args, env=env, timeout=300)
    print(again.stderr)
    assert again.returncode == 0, output_of(again)
    rows = json.loads(zdm("status", "--targets", targets, "--json").stdout)
    assert [r["status"] for r in rows] == ["completed"] * N


def test_targets_file_errors_name_file_and_line(tmp_path: Path) -> None:
    from zdm.fleet.targets import TargetsError, load_targets

    good = tmp_path / "ok.txt"
    good.write_text("postgresql://app:s3cret@db1:6432/t1\n!echo host=db2 dbname=t2 password=pw\n")
    targets = load_targets(good)
    assert [t.host for t in targets] == ["db1:6432", "db2:5432"]
    assert all("s3cret" not in t.label and "pw" not in t.label for t in targets)
    bad = tmp_path / "bad.txt"
    bad.write_text("# fleet\nhost=db1 dbname=a\nnot a dsn ===\n")
    with pytest.raises(TargetsError, match=r"bad\.txt:3: not a connection string"):
        load_targets(bad)
    missing = zdm("run", "plans/add_phone.yaml", "--targets", tmp_path / "none.txt")
    assert missing.returncode == 2
    assert "none.txt: cannot read targets file" in missing.stderr
    wave = zdm("run", "plans/add_phone.yaml", "--targets", good, env={"ZDM_FLEET_WAVE": "x"})
    assert wave.returncode == 2
    assert "ZDM_FLEET_WAVE='x': not a number" in wave.stderr


SLOW_PLAN = """\
version: 1
name: slow
phases:
  additive:
    - sql:
        up: >-
          INSERT INTO fleet_timing VALUES ('start', clock_timestamp());
          SELECT pg_sleep(0.8);
          INSERT INTO fleet_timing VALUES ('end', clock_timestamp());
        down: DELETE FROM fleet_timing;
"""


def _two_names_of_the_server(dsn: str, tmp_path: Path) -> list[str]:
    """Two host names for one server: 127.0.0.1 and localhost, or two links to its socket."""
    host = conninfo_to_dict(dsn).get("host") or "localhost"
    if not str(host).startswith("/"):
        return ["127.0.0.1", "localhost"]
    links = [tmp_path / "host_a", tmp_path / "host_b"]
    for link in links:
        link.symlink_to(host)
    return [str(link) for link in links]


def _most_at_once(spans: list[tuple[Any, Any]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@pytest.mark.parametrize(
    ("concurrency", "per_host", "most_per_host", "most_overall"),
    [("4", "1", 1, 2), ("1", "2", 1, 1)],
    ids=["per-host-limit", "global-limit"],
)
def test_rollout_keeps_the_limits_and_rolls_back(
    pg_admin_dsn: str,
    tmp_path: Path,
    concurrency: str,
    per_host: str,
    most_per_host: int,
    most_overall: int,
) -> None:
    """Seven targets on two host names (two keys of the per-host limit, one server): the
    sql step's start and end, recorded in each target, never overlap past the limits; then
    `zdm rollback --targets` undoes every target."""
    names = [unique_name("zdm_f_") for _ in range(7)]
    dsns = [create_database(pg_admin_dsn, n) for n in names]
    try:
        hosts = _two_names_of_the_server(pg_admin_dsn, tmp_path)
        lines = [make_conninfo(d, host=hosts[i % 2]) for i, d in enumerate(dsns)]
        for d in dsns:
            with psycopg.connect(d, autocommit=True) as c:
                c.execute("CREATE TABLE fleet_timing (what text, at timestamptz)")
        plan = tmp_path / "slow.yaml"
        plan.write_text(SLOW_PLAN)
        targets = tmp_path / "targets.txt"
        targets.write_text("\n".join(lines) + "\n")
        env = {
            "ZDM_FLEET_STATE": str(tmp_path / "state"),
            "ZDM_FLEET_WAVE": "6",
            "ZDM_FLEET_CONCURRENCY": concurrency,
            "ZDM_FLEET_PER_HOST": per_host,
        }
        done = zdm("run", plan, "--targets", targets, env=env, timeout=300)
        print(done.stderr)
        assert done.returncode == 0, output_of(done)
        spans: dict[str, list[tuple[Any, Any]]] = {h: [] for h in hosts}
        for i, d in enumerate(dsns):
            with psycopg.connect(d, autocommit=True) as c:
                at = dict(c.execute("SELECT what, at FROM fleet_timing").fetchall())
            spans[hosts[i % 2]].append((at["start"], at["end"]))
        assert max(_most_at_once(s) for s in spans.values()) == most_per_host
        # The canary runs alone; the wave of six is what the limits shape.
        assert _most_at_once(spans[hosts[0]] + spans[hosts[1]]) == most_overall

        back = zdm("rollback", plan, "--targets", targets, env=env, timeout=300)
        print(back.stderr)
        assert back.returncode == 0, output_of(back)
        for d in dsns:
            with psycopg.connect(d, autocommit=True) as c:
                assert c.execute("SELECT count(*) FROM fleet_timing").fetchone() == (0,)
        rows = json.loads(zdm("status", "--targets", targets, "--json").stdout)
        assert [r["status"] for r in rows] == ["rolled_back"] * 7
    finally:
        for n in names:
            drop_database(pg_admin_dsn, n)


def test_migrate_over_targets(pg_admin_dsn: str, tmp_path: Path) -> None:
    """The seed document's blog migrations (examples/blog) on three targets, then history."""
    names = [unique_name("zdm_f_") for _ in range(3)]
    dsns = [create_database(pg_admin_dsn, n) for n in names]
    try:
        targets = tmp_path / "targets.txt"
        targets.write_text("".join(d + "\n" for d in dsns))
        env = {"ZDM_FLEET_STATE": str(tmp_path / "state"), "ZDM_FLEET_WAVE": "2"}
        blog = Path(__file__).resolve().parent.parent / "examples" / "blog"
        done = zdm("migrate", blog, "--targets", targets, env=env, timeout=300)
        print(done.stderr)
        assert done.returncode == 0, output_of(done)
        assert "canary: " in done.stderr and "wave 1: " in done.stderr
        versions = sorted(p.name.split("__")[0] for p in blog.glob("V*__*"))
        for d in dsns:
            with psycopg.connect(d, autocommit=True) as c:
                applied = c.execute("SELECT version FROM zdm.migrations ORDER BY 1").fetchall()
                assert [v for (v,) in applied] == [v.lstrip("V") for v in versions]
                assert c.execute("SELECT to_regclass('blog.posts') IS NOT NULL").fetchone() == (
                    True,
                )
    finally:
        for n in names:
            drop_database(pg_admin_dsn, n)
