"""The acceptance scenario at test size: plans/add_phone.yaml under live application traffic.

What users rely on: "did my app stall, did I lose or corrupt data". Four application threads
read, update and insert users during the whole migration; the new application version starts
writing `phone` itself once the column exists (as a team would deploy it mid-migration). The
run must complete with zero application errors and every row's phone equal to its normalised
legacy phone. Latencies are printed; only a coarse sanity bound is asserted (the machine is
shared and noisy: timing is for the benchmarks in bench/).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from zdm_helpers import ADD_PHONE, final_catalog_problems, mismatched_phones, scalar, seed

from zdm import api
from zdm.demo.traffic import Traffic

pytestmark = pytest.mark.slow

ROWS = 60_000


@pytest.fixture
def signals_kept() -> Iterator[None]:
    """The runner installs SIGINT/SIGTERM handlers in the main thread: give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_add_phone_under_traffic(dsn: str, server_version: int, signals_kept: None) -> None:
    seed(dsn, ROWS)
    with Traffic(dsn, threads=4, auto_new_app=True, pause_ms=1) as traffic:
        time.sleep(0.5)  # a baseline
        t0 = traffic.now()
        outcome = api.run_plan(ADD_PHONE, dsn)
        t1 = traffic.now()
        time.sleep(0.3)
    report = traffic.report
    assert report is not None
    during = report.window(t0, t1)
    print(
        f"\nadd_phone on {ROWS:,} rows under 4 threads of traffic: {t1 - t0:.1f}s"
        f"\nwhole run:\n{report.format_table()}"
        f"\nduring the migration: p99 {during.p99_ms:.1f}ms, max {during.max_ms:.1f}ms,"
        f" {during.count} statements; stalls >= 200ms: {during.stalls(200)}"
        f"\nnew app deployed at {traffic.new_app_since}s (migration {t0:.1f}s..{t1:.1f}s)"
    )
    assert outcome.status == "completed", outcome.message
    assert report.errors == 0, report.error_samples
    assert during.count > 1000
    assert traffic.new_app_since is not None and t0 < traffic.new_app_since < t1
    assert report.max_ms < 2000  # sanity only: a stall behind a lock would last far longer

    with psycopg.connect(dsn, autocommit=True) as conn:
        assert mismatched_phones(conn) == 0
        assert scalar(conn, "SELECT count(*) FROM users") > ROWS  # the app inserted too
        assert final_catalog_problems(conn, server_version) == []
        run: Any = conn.execute("SELECT status FROM zdm.runs").fetchall()
        assert run == [("completed",)]
