"""Does the application stall? plans/add_phone.yaml against the naive way, under the same traffic.

Every scenario gets its own copy of one seeded database on one embedded server, and the same
application traffic (`zdm.demo.traffic`): a baseline (traffic, no migration); the naive statements
(ADD COLUMN, one big UPDATE, CREATE INDEX, a validated CHECK, SET NOT NULL with its scan); zdm
running the plan; and both again with a transaction holding ACCESS SHARE on users for
`--blocker` seconds as the migration starts (the lock-queue hazard). `zdm-hash8` and
`zdm-range12` run the plan on users partitioned by hash of id (8 partitions) and by range of
created_at (4 quarters of 12 months, two levels, and a default partition), and check every
partition afterwards.

    python bench/zero_downtime.py --rows 1000000 [--html page.html]
    python bench/zero_downtime.py --rows 1000000 --scenarios zdm-hash8,zdm-range12
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from zdm.demo.run import (
    APP_HEADER,
    PLAN_FILE,
    Scenario,
    app_cells,
    demo_timelines,
    run_baseline,
    run_naive,
    run_zdm,
    seeded_database,
    table,
)
from zdm.demo.testing import EmbeddedServer
from zdm.demo.traffic import APPLICATION_NAME, Mix, TrafficReport
from zdm.logs import configure
from zdm.report_html import check_page_path, require_matplotlib, write_page

SCENARIOS = (
    "baseline",
    "naive",
    "zdm",
    "zdm+blocker",
    "naive+blocker",
    "zdm-default",
    "zdm-default+blocker",
    "baseline-hot",
    "zdm-hot",
    "zdm-drops",
    "zdm-hash8",
    "zdm-range12",
)
PARTITIONED = {"zdm-hash8": "hash", "zdm-range12": "range"}
# Traffic of the -hot scenarios: transactions that update 2 or 3 rows in random order, a third
# among 200 hot rows, with the application's own work between the updates.
HOT_MIX = Mix(select=0.5, update=0.0, insert=0.1, txn=0.4)
HOT_THINK_MS = 2.0
DROPS = 3


def default_plan(directory: Path) -> Path:
    """plans/add_phone.yaml with nothing tuned: no settings, no batch_time (the defaults)."""
    plan = yaml.safe_load(PLAN_FILE.read_text())
    plan.pop("settings", None)
    plan["name"] = "add_phone_default"
    for step in plan["phases"]["backfill"]:
        step.get("backfill", {}).pop("batch_time", None)
    path = directory / "add_phone_default.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def clone(admin_dsn: str, template: str, name: str) -> str:
    """A copy of database `template` (a file copy: much faster than seeding again)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return make_conninfo(admin_dsn, dbname=name)


def partition_users(dsn: str, kind: str) -> int:
    """Makes the seeded users table partitioned, the same rows in it: `hash` (8 partitions of
    id) or `range` (created_at spread over 2025: 4 quarters of 3 months, and a default partition
    for the application's new rows). Its number of leaf partitions."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE users RENAME TO users_flat")
        conn.execute("ALTER TABLE users_flat RENAME CONSTRAINT users_pkey TO users_flat_pkey")
        key = "id" if kind == "hash" else "id, created_at"
        how = "HASH (id)" if kind == "hash" else "RANGE (created_at)"
        conn.execute(
            "CREATE TABLE users (LIKE users_flat INCLUDING DEFAULTS INCLUDING IDENTITY"
            f" INCLUDING CONSTRAINTS, PRIMARY KEY ({key})) PARTITION BY {how}"
        )
        leaves = 0
        if kind == "hash":
            for i in range(8):
                conn.execute(
                    f"CREATE TABLE users_p{i} PARTITION OF users"
                    f" FOR VALUES WITH (MODULUS 8, REMAINDER {i})"
                )
                leaves += 1
        else:
            for q in range(4):
                start, end = (
                    f"2025-{3 * q + 1:02d}-01",
                    (f"2025-{3 * q + 4:02d}-01" if q < 3 else "2026-01-01"),
                )
                conn.execute(
                    f"CREATE TABLE users_2025q{q + 1} PARTITION OF users FOR VALUES FROM"
                    f" ('{start}') TO ('{end}') PARTITION BY RANGE (created_at)"
                )
                for m in range(3 * q + 1, 3 * q + 4):
                    upto = f"2025-{m + 1:02d}-01" if m < 12 else "2026-01-01"
                    conn.execute(
                        f"CREATE TABLE users_2025m{m:02d} PARTITION OF users_2025q{q + 1}"
                        f" FOR VALUES FROM ('2025-{m:02d}-01') TO ('{upto}')"
                    )
                    leaves += 1
            conn.execute("CREATE TABLE users_default PARTITION OF users DEFAULT")
            leaves += 1
        created = (
            "created_at"
            if kind == "hash"
            else "timestamptz '2025-01-01 00:00:00+00'"
            " + make_interval(secs => mod(id * 7919, 31536000)::float8)"
        )
        conn.execute(
            "INSERT INTO users (id, email, name, password_hash, email_verified, contact,"
            " created_at, updated_at, deleted_at) SELECT id, email, name, password_hash,"
            f" email_verified, contact, {created}, updated_at, deleted_at FROM users_flat"
        )
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))"
        )
        conn.execute("DROP TABLE users_flat")
        conn.execute("VACUUM (ANALYZE) users")
    return leaves


def partition_problems(dsn: str) -> list[str]:
    """After the plan: each leaf's phone index valid and attached, its constraints validated,
    phone NOT NULL, every row's phone right; what is wrong (empty when all is)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            """
            SELECT c.relname,
                   (SELECT count(*) FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indexrelid
                    WHERE i.indrelid = c.oid AND i.indisvalid AND 'idx_users_phone'::regclass
                    IN (SELECT a.relid FROM pg_partition_ancestors(i.indexrelid) a)),
                   (SELECT bool_and(convalidated) FROM pg_constraint WHERE conrelid = c.oid),
                   (SELECT attnotnull FROM pg_attribute WHERE attrelid = c.oid AND attname = 'phone')
            FROM pg_partition_tree('users') t JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf
            """
        ).fetchall()
        problems = [
            f"{name}: index {n}, validated {v}, not null {nn}"
            for name, n, v, nn in rows
            if (n, v, nn) != (1, True, True)
        ]
        valid = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_users_phone'::regclass"
        ).fetchone()
        if not (valid and valid[0]):
            problems.append("idx_users_phone is not valid")
        wrong = conn.execute(
            "SELECT count(*) FROM users"
            " WHERE phone IS DISTINCT FROM regexp_replace(contact->>'phone', '[^0-9+]', '', 'g')"
        ).fetchone()
        if wrong and wrong[0]:
            problems.append(f"{wrong[0]} rows with a wrong phone")
        return problems


WAITING = sql.SQL(
    "SELECT a.pid, a.query_start, a.wait_event,"
    " round(extract(epoch FROM clock_timestamp() - a.query_start) * 1000)::int,"
    " (SELECT string_agg(b.application_name || ': ' || left(b.query, 70), '; ')"
    "  FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(a.pid)))"
    " FROM pg_stat_activity a"
    " WHERE a.application_name = {app} AND a.state = 'active' AND a.wait_event_type = 'Lock'"
).format(app=sql.Literal(APPLICATION_NAME))


@dataclass(frozen=True)
class LockWait:
    ms: int
    wait_event: str
    blocked_by: str


class LockWatcher(threading.Thread):
    """Samples pg_stat_activity: how long application statements waited for a lock, and on whom.

    Latency alone cannot tell a lock wait from a CPU-starved machine; this can (to the sampling
    interval: a wait shorter than it may go unseen, a longer one is seen shortened by up to it).
    """

    def __init__(self, dsn: str, interval_s: float = 0.02) -> None:
        super().__init__(daemon=True, name="zdm-bench-lock-watcher")
        self.dsn, self.interval_s = dsn, interval_s
        self.waits: dict[tuple[int, Any], LockWait] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stopping.wait(self.interval_s):
                for pid, start, event, ms, by in conn.execute(WAITING).fetchall():
                    seen = self.waits.get((pid, start))
                    if seen is None or ms > seen.ms:
                        self.waits[(pid, start)] = LockWait(ms, event, by or "(ended)")

    def stop(self) -> list[LockWait]:
        self.stopping.set()
        self.join()
        return sorted(self.waits.values(), key=lambda w: -w.ms)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pause-ms", type=float, default=1.0, help="think time per statement")
    parser.add_argument("--blocker", type=float, default=5.0, help="seconds the blocker holds")
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--html", type=Path, help="also draw the scenarios' latency into this page (zdm[report])"
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    configure("console", args.log_level)
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")

    if args.html is not None:
        require_matplotlib()
        check_page_path(args.html)
    rows_out: list[list[str]] = []
    drawn: list[Scenario] = []
    detail: dict[str, Any] = {}
    started = time.monotonic()
    load = os.getloadavg()
    with EmbeddedServer(fast=True) as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with psycopg.connect(server.dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        version = str(row[0]) if row else "?"
        t = time.monotonic()
        seeded_database(server.dsn, "template_users", args.rows)
        print(f"seeded {args.rows:,} users in {time.monotonic() - t:.0f} s", file=sys.stderr)
        for i, name in enumerate(wanted):
            db = f"bench_{i}"
            dsn = clone(server.dsn, "template_users", db)
            print(f"running {name}", file=sys.stderr)
            blocker = args.blocker if name.endswith("+blocker") else 0.0
            common: dict[str, Any] = {
                "threads": args.threads,
                "pause_ms": args.pause_ms,
            }
            watcher = LockWatcher(dsn)
            watcher.start()
            if name.startswith("baseline"):
                if name.endswith("-hot"):
                    common.update(mix=HOT_MIX, txn_think_ms=HOT_THINK_MS)
                report = run_baseline(dsn, max(args.baseline_seconds, 20.0), **common)
                waits = watcher.stop()
                rows_out.append(_row(name, report, None, "-", waits))
                detail[name] = {"app": report.as_dict(), "lock_waits": _waits(waits)}
                continue
            if name in PARTITIONED:
                t = time.monotonic()
                leaves = partition_users(dsn, PARTITIONED[name])
                print(f"  {leaves} partitions in {time.monotonic() - t:.0f} s", file=sys.stderr)
            if name.startswith("zdm"):
                if name.startswith("zdm-default"):
                    # Nothing tuned; its blocker is a report that runs 4.5 s as the run starts.
                    common["plan"] = default_plan(workdir)
                    common["blocker_active"] = True
                    blocker = min(blocker, 4.5)
                if name == "zdm-hot":
                    common.update(mix=HOT_MIX, txn_think_ms=HOT_THINK_MS)
                if name == "zdm-drops":
                    common["drops"] = DROPS
                result = run_zdm(
                    dsn, baseline_s=args.baseline_seconds, blocker_s=blocker, name=name, **common
                )
            else:
                result = run_naive(
                    dsn, baseline_s=args.baseline_seconds, blocker_s=blocker, name=name, **common
                )
            waits = watcher.stop()
            drawn.append(result)
            assert result.during is not None
            if name in PARTITIONED:
                problems = partition_problems(dsn)
                result.ok = result.ok and not problems
                result.message += "; partitions: " + ("; ".join(problems) or "all right")
                detail[f"{name} partitions"] = problems
            rows_out.append(_row(name, result.during, result, f"{result.duration_s:.1f} s", waits))
            detail[name] = {**_detail(result), "app_lock_waits": _waits(waits)}
            _print_stalls(result, waits)
    title = (
        f"zero_downtime: {args.rows:,} users, PostgreSQL {version}, {args.threads} application"
        f" threads ({args.pause_ms:g} ms think time), blocker {args.blocker:g} s"
    )
    text = table(
        ["scenario", *APP_HEADER, "migration", "ok", "app lock waits", "longest, on"],
        rows_out,
        indent="",
    )
    print(f"\n{title}\n{text}")
    if args.html is not None:
        write_page(args.html, title, demo_timelines(drawn), f"{title}\n\n{text}\n")
        print(f"wrote {args.html}", file=sys.stderr)
    print(
        f"\nbench wall time {time.monotonic() - started:.0f} s; load average at the start"
        f" {load[0]:.1f}, at the end {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": args.rows, "version": version, "scenarios": detail}, f, indent=2)
    return 0


def _row(
    name: str, app: TrafficReport, result: Scenario | None, duration: str, waits: list[LockWait]
) -> list[str]:
    ok = "-" if result is None else ("yes" if result.ok else "FAILED")
    worst = f"{waits[0].ms:,} ms, {_who(waits[0].blocked_by)}" if waits else "-"
    return [name, *app_cells(app), duration, ok, f"{len(waits):,}", worst]


def _who(blocked_by: str) -> str:
    """The blocker's application, shortened for the table (the JSON has its query)."""
    app = blocked_by.split(":", 1)[0]
    return app.split(" (", 1)[0] if app.startswith("zdm ") else app


def _waits(waits: list[LockWait]) -> list[dict[str, Any]]:
    return [
        {"ms": w.ms, "wait_event": w.wait_event, "blocked_by": w.blocked_by} for w in waits[:50]
    ]


def _detail(result: Scenario) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "message": result.message,
        "duration_s": round(result.duration_s, 3),
        "baseline": result.baseline.as_dict() if result.baseline else None,
        "during": result.during.as_dict() if result.during else None,
        "parts": [
            {
                "name": p.name,
                "duration_s": round(p.duration_s, 3),
                "detail": p.detail,
                "app": p.app.as_dict(),
            }
            for p in result.parts
        ],
        "stalls": [
            {"at_s": round(s.at_s, 3), "kind": s.kind, "ms": round(s.ms, 1), "during": s.during}
            for s in result.stalls
        ],
        "downtime": result.record["downtime"] if result.record else None,
        "lock_waits": result.record["lock_waits"] if result.record else None,
    }


def _print_stalls(result: Scenario, waits: list[LockWait]) -> None:
    print(f"{result.name}: {result.message} in {result.duration_s:.1f} s", file=sys.stderr)
    print(
        table(
            ["part", "duration", *APP_HEADER, ""],
            [[p.name, f"{p.duration_s:.2f} s", *app_cells(p.app), p.detail] for p in result.parts],
        ),
        file=sys.stderr,
    )
    for s in sorted(result.stalls, key=lambda s: -s.ms)[:15]:
        print(
            f"  stall {s.ms:7.0f} ms {s.kind:6} at {s.at_s:7.2f} s during {s.during}",
            file=sys.stderr,
        )
    if result.record:
        for w in result.record["lock_waits"]:
            print(f"  {w['event']} {w.get('unit')} at {w['at']}", file=sys.stderr)
    for lw in waits[:10]:
        print(f"  app lock wait {lw.ms:6} ms on {lw.wait_event}: {lw.blocked_by}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
