"""`zdm demo`, and the scenarios it shares with the benchmarks: a migration under live traffic.

A scenario seeds nothing: it starts application traffic on a seeded `users` table, records a
baseline, makes the change (zdm's plan, or the naive statements), optionally with a long
transaction in the way, and returns what the application saw, phase by phase.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import psycopg
import structlog
from psycopg import sql

from zdm import api
from zdm.demo.seed import PHONE_CHECK, create_schema, phone_expression, seed_users
from zdm.demo.testing import EmbeddedServer, create_database
from zdm.demo.traffic import Mix, Traffic, TrafficReport
from zdm.engine.session import connect
from zdm.report import collect
from zdm.report_html import check_page_path, require_matplotlib, write_page
from zdm.state import RunStatus
from zdm.timeline import Span, Timeline, timeline_of_record

PLAN_FILE = Path(__file__).with_name("add_phone.yaml")
"""The flagship plan, shipped in the package; identical to plans/add_phone.yaml."""

BASELINE_S = 3.0
STALL_MS = 100.0
PAUSE_MS = 1.0
"""Each application thread's think time between statements (0 would saturate small machines)."""

log = structlog.get_logger("zdm.demo")


# -- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A phase of zdm's run, or one naive statement, with what the application saw meanwhile."""

    name: str
    start_s: float
    end_s: float
    app: TrafficReport
    detail: str = ""

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Stall:
    """An application statement slower than the stall threshold, and what zdm was doing then."""

    at_s: float
    kind: str
    ms: float
    during: str


@dataclass
class Scenario:
    name: str
    ok: bool = False
    message: str = ""
    baseline: TrafficReport | None = None
    during: TrafficReport | None = None
    duration_s: float = 0.0
    parts: list[Part] = field(default_factory=list)
    stalls: list[Stall] = field(default_factory=list)
    record: dict[str, Any] | None = None
    app: TrafficReport | None = None
    """Every statement the application ran, baseline included (for the page's chart)."""
    wall0: float = 0.0
    """Epoch seconds of the traffic's time 0."""


class Blocker(threading.Thread):
    """A transaction that reads `table` and then holds its ACCESS SHARE lock for `seconds`.

    Idle in transaction, like an application that opened a transaction and went to do
    something else: the lock-queue hazard every ALTER TABLE meets in production.
    """

    def __init__(
        self, dsn: str, seconds: float, table: str = "users", *, active: bool = False
    ) -> None:
        super().__init__(daemon=True, name="zdm-blocker")
        self.dsn, self.seconds, self.table, self.active = dsn, seconds, table, active
        self.holding = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, application_name="zdm-bench-blocker") as conn:
                conn.execute(
                    sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT 1) s").format(
                        sql.Identifier(self.table)
                    )
                )
                self.holding.set()
                if self.active:
                    # A report: one statement that runs (not idle) for all that time.
                    conn.execute("SELECT pg_sleep(%s)", [self.seconds])
                else:
                    time.sleep(self.seconds)
                conn.rollback()
        except BaseException as e:
            self.error = e
        finally:
            self.holding.set()

    def begin(self) -> None:
        self.start()
        self.holding.wait()


class Dropper(threading.Thread):
    """Ends every session of this process's zdm runs (`pg_terminate_backend`), `times` times,
    2 s apart, once the backfill has started: a network blip or a failover, as zdm sees it."""

    def __init__(self, dsn: str, times: int) -> None:
        super().__init__(daemon=True, name="zdm-dropper")
        self.dsn, self.times = dsn, times
        self.stop = threading.Event()
        self.done = 0

    def run(self) -> None:
        me = f"%:{os.getpid()})"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.wait(0.1):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'zdm backfill %%' AND application_name LIKE %s",
                    [me],
                ).fetchone()
                if row and row[0]:
                    break
            while self.done < self.times and not self.stop.wait(2.0):
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'zdm %%' AND application_name LIKE %s",
                    [me],
                )
                self.done += 1


@contextlib.contextmanager
def _traffic(
    dsn: str, threads: int, pause_ms: float, mix: Mix | None = None, txn_think_ms: float = 0.0
) -> Iterator[Traffic]:
    traffic = Traffic(
        dsn,
        threads=threads,
        auto_new_app=True,
        pause_ms=pause_ms,
        mix=mix,
        txn_think_ms=txn_think_ms,
    )
    traffic.start()
    try:
        yield traffic
    finally:
        traffic.stop()


def run_zdm(
    dsn: str,
    *,
    plan: Path = PLAN_FILE,
    threads: int = 4,
    pause_ms: float = PAUSE_MS,
    baseline_s: float = BASELINE_S,
    blocker_s: float = 0.0,
    blocker_active: bool = False,
    name: str = "zdm",
    mix: Mix | None = None,
    txn_think_ms: float = 0.0,
    drops: int = 0,
) -> Scenario:
    """Runs `plan` with zdm under traffic (after a baseline), optionally behind a blocker, and
    with `drops` times all of zdm's sessions ended by the server during the backfill."""
    result = Scenario(name)
    with _traffic(dsn, threads, pause_ms, mix, txn_think_ms) as traffic:
        time.sleep(baseline_s)
        blocker = Blocker(dsn, blocker_s, active=blocker_active) if blocker_s else None
        if blocker is not None:
            blocker.begin()
        dropper = Dropper(dsn, drops) if drops else None
        if dropper is not None:
            dropper.start()
        t0 = traffic.now()
        wall0 = time.time() - t0
        log.info("demo_migration_start", way=name, plan=str(plan))
        with _signals_restored():
            outcome = api.run_plan(plan, dsn)
        t1 = traffic.now()
        if dropper is not None:
            dropper.stop.set()
            dropper.join()
            result.message = f"{dropper.done} connection drops; "
        if outcome.status == RunStatus.PAUSED:
            raise KeyboardInterrupt
        log.info("demo_migration_end", way=name, status=outcome.status, seconds=round(t1 - t0, 1))
        if blocker is not None:
            blocker.join()
    report = _report(traffic)
    result.app, result.wall0 = report, wall0
    result.ok = outcome.status == RunStatus.COMPLETED
    result.message += outcome.message
    result.baseline = report.window(0.0, t0)
    result.during = report.window(t0, t1)
    result.duration_s = t1 - t0
    with connect(dsn, "demo") as conn:
        result.record = collect(conn, dsn, run_id=outcome.run_id) if outcome.run_id else None
    if result.record is not None:
        result.parts = _phase_parts(result.record, report, wall0)
        result.stalls = _attribute(report.window(t0, t1).stalls(STALL_MS), result.record, wall0)
    return result


def naive_statements(table: str = "users") -> list[tuple[str, sql.Composed]]:
    """The same change as plans/add_phone.yaml, the way a plain migration file makes it."""
    t = sql.Identifier(table)
    phone = sql.Identifier("phone")
    return [
        (
            "ADD COLUMN phone",
            sql.SQL("ALTER TABLE {} ADD COLUMN {} varchar(20)").format(t, phone),
        ),
        (
            "UPDATE every row",
            sql.SQL("UPDATE {} SET {} = {}").format(t, phone, sql.SQL(phone_expression())),
        ),
        (
            "CREATE INDEX",
            sql.SQL("CREATE INDEX {} ON {} ({})").format(
                sql.Identifier("idx_users_phone"), t, phone
            ),
        ),
        (
            "ADD CONSTRAINT CHECK",
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} ~ {})").format(
                t, sql.Identifier("check_phone_format"), phone, sql.Literal(PHONE_CHECK)
            ),
        ),
        (
            "SET NOT NULL",
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(t, phone),
        ),
    ]


def run_naive(
    dsn: str,
    *,
    threads: int = 4,
    pause_ms: float = PAUSE_MS,
    baseline_s: float = BASELINE_S,
    blocker_s: float = 0.0,
    name: str = "naive",
) -> Scenario:
    """Makes the change with plain statements (no lock_timeout, one big UPDATE) under traffic.

    The new application version is deployed right after ADD COLUMN, as it would be between two
    migration files; without it, rows the old version inserts during the UPDATE stay NULL and
    SET NOT NULL fails.
    """
    result = Scenario(name)
    spans: list[tuple[str, float, float, str]] = []
    with _traffic(dsn, threads, pause_ms) as traffic, connect(dsn, "demo naive") as conn:
        time.sleep(baseline_s)
        blocker = Blocker(dsn, blocker_s) if blocker_s else None
        if blocker is not None:
            blocker.begin()
        t0 = traffic.now()
        result.wall0 = time.time() - t0
        log.info("demo_migration_start", way=name)
        try:
            for label, stmt in naive_statements():
                a = traffic.now()
                conn.execute(stmt)
                b = traffic.now()
                spans.append((label, a, b, stmt.as_string(conn)))
                log.info("demo_naive_statement", statement=label, seconds=round(b - a, 2))
                if label.startswith("ADD COLUMN"):
                    traffic.use_new_app()
                    time.sleep(0.2)  # statements the old version had in flight finish
            result.ok, result.message = True, "completed"
        except psycopg.Error as e:
            result.message = f"failed: {type(e).__name__}: {str(e).strip()}"
            log.error("demo_naive_failed", error=result.message)
        t1 = traffic.now()
        if blocker is not None:
            blocker.join()
    report = _report(traffic)
    result.app = report
    result.baseline = report.window(0.0, t0)
    result.during = report.window(t0, t1)
    result.duration_s = t1 - t0
    result.parts = [Part(n, a, b, report.window(a, b), text) for n, a, b, text in spans]
    result.stalls = [
        Stall(at, kind, ms, next((n for n, a, b, _ in spans if a <= at + ms / 1000 and at < b), ""))
        for at, kind, ms in report.window(t0, t1).stalls(STALL_MS)
    ]
    return result


def run_baseline(
    dsn: str,
    seconds: float,
    *,
    threads: int = 4,
    pause_ms: float = PAUSE_MS,
    mix: Mix | None = None,
    txn_think_ms: float = 0.0,
) -> TrafficReport:
    """Traffic alone, for the benchmark's reference row."""
    with _traffic(dsn, threads, pause_ms, mix, txn_think_ms) as traffic:
        time.sleep(seconds)
    return _report(traffic)


def _report(traffic: Traffic) -> TrafficReport:
    report = traffic.report if traffic.report is not None else traffic.stop()
    return report


@contextlib.contextmanager
def _signals_restored() -> Iterator[None]:
    """The runner turns SIGINT/SIGTERM into a graceful stop; give them back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def _phase_parts(record: dict[str, Any], report: TrafficReport, wall0: float) -> list[Part]:
    parts = []
    for ph in record["phases"]:
        start, end = _ts(ph["started_at"]), _ts(ph["finished_at"])
        if start is None or end is None:
            continue
        a, b = start - wall0, end - wall0
        detail = ""
        if ph["phase"] == "backfill":
            rows = sum(bf["rows_done"] for bf in record["backfills"])
            detail = f"{rows:,} rows, {rows / max(b - a, 1e-6):,.0f} rows/s"
        parts.append(Part(ph["phase"], a, b, report.window(a, b), detail))
    return parts


def _spans(record: dict[str, Any], wall0: float) -> list[tuple[float, float, str]]:
    """What zdm was doing when: units (from their end and duration), then whole steps."""
    spans = []
    for st in record["statements"]:
        end = _ts(st["finished_at"])
        if end is not None:
            held = (st["held_ms"] or 0) / 1000
            spans.append((end - held - wall0, end - wall0, f"{st['unit']} ({st['lock']})"))
    for ph in record["phases"]:
        for s in ph["steps"]:
            a, b = _ts(s["started_at"]), _ts(s["finished_at"])
            if a is not None and b is not None:
                spans.append((a - wall0, b - wall0, f"step {s['key']} {s['kind']}"))
    return spans


def _attribute(
    stalls: Sequence[tuple[float, str, float]], record: dict[str, Any], wall0: float
) -> list[Stall]:
    spans = _spans(record, wall0)
    out = []
    for at, kind, ms in stalls:
        end = at + ms / 1000
        during = next((d for a, b, d in spans if a <= end and at <= b), "")
        out.append(Stall(at, kind, ms, during))
    return out


# -- `zdm demo` ------------------------------------------------------------------------------


def seeded_database(admin_dsn: str, name: str, rows: int) -> str:
    """A new database on the server holding the example users table with `rows` rows."""
    dsn = create_database(admin_dsn, name)
    with connect(dsn, "demo seed") as conn:
        create_schema(conn)
        seed_users(conn, rows)
        conn.execute("VACUUM (ANALYZE) users")
    return dsn


def demo_command(
    *, rows: int, compare_naive: bool, threads: int, out: TextIO, html: Path | None = None
) -> int:
    """Embedded server, example data, the flagship plan under traffic, a report on `out` (and
    the page with its chart at `html`)."""
    if rows < 1 or threads < 1:
        print("--rows and --threads must be at least 1", file=sys.stderr)
        return 2
    if html is not None:  # before minutes of work, not after
        require_matplotlib()
        check_page_path(html)
    started = time.monotonic()
    try:
        with _terminate_as_interrupt(), EmbeddedServer(fast=True) as server:
            log.info("demo_server_started", data_dir=str(server.data_dir))
            results, version = _demo(server.dsn, rows, compare_naive, threads)
    except KeyboardInterrupt:
        print("interrupted: the embedded server is stopped and its files removed", file=sys.stderr)
        return 130
    text = format_demo(results, rows=rows, threads=threads, version=version)
    text += f"\nwall time {time.monotonic() - started:.0f} s\n"
    out.write(text)
    if html is not None:
        title = f"zdm demo: plan add_phone on {rows:,} users, PostgreSQL {version}"
        write_page(html, title, demo_timelines(results), text)
        print(f"wrote {html}", file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1


def demo_timelines(results: Sequence[Scenario]) -> list[Timeline]:
    """Each scenario on the page's chart, with the latency its traffic measured: zdm's from its
    run's record, the naive way's from its statements (each held a lock blocking the app)."""
    out = []
    for r in results:
        if r.app is None or r.during is None:
            continue
        samples = [(r.wall0 + at, ms) for at, ms in r.app.latencies()]
        source = f"the demo's application traffic ({len(samples):,} statements)"
        named = "" if r.name in ("zdm", "naive") else f" (scenario {r.name})"
        if r.record is not None:
            tl = timeline_of_record(r.record, samples, source=source)
            out.append(replace(tl, title=tl.title + named))
            continue
        spans = [Span(p.name, r.wall0 + p.start_s, r.wall0 + p.end_s) for p in r.parts]
        locks = [
            Span(f"{s.label} ({(s.end - s.start) * 1000:,.0f} ms)", s.start, s.end) for s in spans
        ]
        origin = r.wall0 + r.during.t0
        title = f"the naive way{named}: {r.message}"
        out.append(Timeline(title, origin, origin + r.duration_s, samples, spans, locks, source))
    return out


def _demo(
    admin_dsn: str, rows: int, compare_naive: bool, threads: int
) -> tuple[list[Scenario], str]:
    with psycopg.connect(admin_dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    version = str(row[0]) if row else "?"
    log.info("demo_seeding", rows=rows)
    dsn = seeded_database(admin_dsn, "zdm_demo", rows)
    results = [run_zdm(dsn, threads=threads)]
    if compare_naive:
        log.info("demo_seeding", rows=rows, database="zdm_demo_naive")
        naive = seeded_database(admin_dsn, "zdm_demo_naive", rows)
        results.append(run_naive(naive, threads=threads))
    return results, version


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM cleans up like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    saved = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


# -- formatting ------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """Left-aligned first column, right-aligned others."""
    all_rows = [list(header), *map(list, rows)]
    widths = [max(len(r[c]) for r in all_rows) for c in range(len(header))]
    return "\n".join(
        indent
        + "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in all_rows
    )


def app_cells(r: TrafficReport) -> list[str]:
    return [
        f"{r.count:,}",
        f"{r.errors:,}",
        f"{r.p50_ms:.1f}",
        f"{r.p99_ms:.1f}",
        f"{r.max_ms:,.0f}",
    ]


APP_HEADER = ["statements", "errors", "p50 ms", "p99 ms", "max ms"]


def _secs(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def format_demo(results: Sequence[Scenario], *, rows: int, threads: int, version: str) -> str:
    lines = [
        f"zdm demo: plan add_phone on {rows:,} users, PostgreSQL {version},"
        f" {threads} application threads",
        "",
    ]
    for r in results:
        title = "zdm, plans/add_phone.yaml" if r.name == "zdm" else "the naive way"
        lines.append(f"{title}: {r.message} in {r.duration_s:.1f} s")
        head = "phase" if r.name == "zdm" else "statement"
        lines.append(
            table(
                [head, "duration", *APP_HEADER, ""],
                [[p.name, _secs(p.duration_s), *app_cells(p.app), p.detail] for p in r.parts]
                if r.name == "zdm"
                else [[p.name, _secs(p.duration_s), *app_cells(p.app), ""] for p in r.parts],
            )
        )
        if r.record is not None:
            d = r.record["downtime"]
            lines.append(
                f"  longest lock that blocks the application: {d['max_ms']} ms"
                f" ({d['unit']}, {d['lock']}), held by one short transaction"
            )
        lines.append("")
    lines.append("application during the migration")
    app_rows = []
    for r in results:
        if r.baseline is not None and r.during is not None:
            app_rows.append(
                [f"before {r.name} ({r.baseline.duration_s:.0f} s)", *app_cells(r.baseline)]
            )
            app_rows.append(
                [f"during {r.name} ({r.during.duration_s:.1f} s)", *app_cells(r.during)]
            )
    lines.append(table(["window", *APP_HEADER], app_rows))
    lines.append("")
    for r in results:
        lines.append(_stall_line(r))
    return "\n".join(lines) + "\n"


def _stall_line(r: Scenario) -> str:
    if not r.stalls:
        return f"{r.name}: no application statement took {STALL_MS:.0f} ms or more"
    worst = max(r.stalls, key=lambda s: s.ms)
    return (
        f"{r.name}: {len(r.stalls):,} application statement{'s' if len(r.stalls) > 1 else ''}"
        f" took {STALL_MS:.0f} ms or more;"
        f" the longest, {worst.ms:,.0f} ms ({worst.kind}), during {worst.during or '?'}"
    )


__all__ = [
    "PLAN_FILE",
    "Blocker",
    "Part",
    "Scenario",
    "Stall",
    "demo_command",
    "demo_timelines",
    "format_demo",
    "naive_statements",
    "run_baseline",
    "run_naive",
    "run_zdm",
    "seeded_database",
    "table",
]
