"""`zdm demo`: the README's main command, run as users run it, and its clean-up on Ctrl-C."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from zdm_helpers import ADD_PHONE, ROOT, events, named, output_of, start_zdm, wait_for, zdm

from zdm.demo.run import PLAN_FILE

PHASES = ("additive", "dual_write", "backfill", "dual_read", "cleanup")
NAIVE = (
    "ADD COLUMN phone",
    "UPDATE every row",
    "CREATE INDEX",
    "ADD CONSTRAINT CHECK",
    "SET NOT NULL",
)
APP_ROW = re.compile(
    r"^\s+(?P<label>(?:before|during) \S+) \([\d.]+ s\)\s+(?P<count>[\d,]+)\s+(?P<errors>[\d,]+)"
    r"\s+(?P<p50>[\d.]+)\s+(?P<p99>[\d.]+)\s+(?P<max>[\d,]+)$",
    re.M,
)


def test_the_shipped_plan_is_plans_add_phone() -> None:
    assert PLAN_FILE.read_bytes() == ADD_PHONE.read_bytes()
    assert PLAN_FILE.is_relative_to(ROOT / "src" / "zdm")


@pytest.mark.slow
def test_demo_prints_the_report_with_no_application_errors(tmp_path: Path) -> None:
    started = time.monotonic()
    page = tmp_path / "demo.html"
    done = zdm(
        "demo",
        "--rows",
        "20000",
        "--compare-naive",
        "--threads",
        "2",
        "--html",
        page,
        timeout=300,
    )
    assert done.returncode == 0, output_of(done)
    out = done.stdout
    assert out.startswith("zdm demo: plan add_phone on 20,000 users, PostgreSQL")

    # Per-phase durations, and the backfill's rate.
    for phase in PHASES:
        assert re.search(rf"^\s+{phase}\s+\d+(?: ms|\.\d s)\s", out, re.M), (phase, out)
    rate = re.search(r"^\s+backfill .* ([\d,]+) rows, ([\d,]+) rows/s$", out, re.M)
    assert rate is not None, out
    assert int(rate.group(1).replace(",", "")) >= 20_000
    assert "longest lock that blocks the application:" in out

    # The naive way, statement by statement.
    for statement in NAIVE:
        assert re.search(rf"^\s+{statement}\s+\d", out, re.M), (statement, out)

    # Application latency before and during each way; zdm caused no error.
    rows = {m["label"]: m for m in APP_ROW.finditer(out)}
    assert set(rows) == {"before zdm", "during zdm", "before naive", "during naive"}, out
    for label, row in rows.items():
        assert int(row["count"].replace(",", "")) > 0, label
    assert rows["during zdm"]["errors"] == "0"
    assert rows["before zdm"]["errors"] == "0"

    # The page: both ways on the same scales, with the report beside the chart.
    html = page.read_text()
    for run in ("run-0", "run-1"):
        assert f'id="{run}-latency-p99"' in html and f'id="{run}-lock-markers"' in html
    assert 'id="run-0-phase-2-backfill"' in html and 'id="run-1-phase-1-update-every-row"' in html
    assert "zdm demo: plan add_phone on 20,000 users" in html and "<script" not in html
    assert f"wrote {page}" in done.stderr

    # Progress went to stderr as logs, never to stdout.
    assert "demo_migration_start" in done.stderr and "demo_migration_start" not in out
    assert "phase_start" in done.stderr
    print(f"\nzdm demo --rows 20000 --compare-naive: {time.monotonic() - started:.0f} s\n{out}")


@pytest.mark.slow
def test_ctrl_c_during_the_migration_stops_and_removes_the_server() -> None:
    demo = start_zdm("--log-format", "json", "demo", "--rows", "100000")

    def logged(name: str) -> list[dict[str, object]]:
        demo.err.seek(0)
        return named(events(demo.err.read()), name)

    wait_for(lambda: logged("backfill_start"), 120, "the backfill", interval=0.1, alive=demo)
    data_dir = Path(str(logged("demo_server_started")[0]["data_dir"]))
    assert data_dir.exists()
    demo.err.seek(0, 2)
    demo.proc.send_signal(signal.SIGINT)
    done = demo.wait(120)
    assert done.returncode == 130, output_of(done)
    assert "interrupted" in done.stderr
    assert named(events(done.stderr), "run_interrupted")  # the batch in flight committed first
    assert not data_dir.exists()
    assert not _processes_using(data_dir)
    assert done.stdout == ""


def _processes_using(data_dir: Path) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(data_dir) in text:
            found.append(text)
    return found
