"""`zdm report --html`: a real run under real application traffic, drawn into a page that a
real headless browser renders (Debian's chromium; that test skips without one)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from zdm_helpers import ADD_PHONE, output_of, seed, zdm

from zdm.demo.run import run_naive
from zdm.demo.testing import create_database, drop_database, unique_name
from zdm.demo.traffic import Traffic
from zdm.report_html import LOCK, P50, P99
from zdm.timeline import (
    LatencyFileError,
    Span,
    Timeline,
    buckets,
    read_latency,
    write_latency_csv,
    write_latency_json,
)

ROWS = 3_000
CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)


@pytest.fixture(scope="module")
def pages(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """plans/add_phone.yaml run by `zdm run` while the application's traffic runs, the same
    change made the naive way under the same traffic, and the pages `zdm report --html` draws."""
    tmp = tmp_path_factory.mktemp("report_html")
    names = [unique_name("zdm_t_"), unique_name("zdm_t_")]
    zdm_dsn, naive_dsn = (create_database(pg_admin_dsn, n) for n in names)
    try:
        seed(zdm_dsn, ROWS)
        seed(naive_dsn, ROWS)
        with Traffic(zdm_dsn, threads=2, pause_ms=1.0, auto_new_app=True) as traffic:
            time.sleep(1.0)
            ran = zdm("run", ADD_PHONE, "--dsn", zdm_dsn)
            time.sleep(1.0)
            wall0 = time.time() - traffic.now()
            app = traffic.stop()
        assert ran.returncode == 0, output_of(ran)
        latency = tmp / "app.csv"
        assert write_latency_csv(latency, ((wall0 + at, ms) for at, ms in app.latencies())) > 100

        naive = run_naive(naive_dsn, threads=2, baseline_s=1.0)
        assert naive.ok and naive.app is not None, naive.message
        spans = [Span(p.name, naive.wall0 + p.start_s, naive.wall0 + p.end_s) for p in naive.parts]
        naive_file = tmp / "naive.json"
        samples = [(naive.wall0 + at, ms) for at, ms in naive.app.latencies()]
        write_latency_json(naive_file, samples, spans)

        record = json.loads(zdm("report", "--dsn", zdm_dsn, "--format", "json").stdout)
        full, alone = tmp / "full.html", tmp / "alone.html"
        drawn = zdm(
            "report",
            "add_phone",
            "--dsn",
            zdm_dsn,
            "--html",
            full,
            "--latency",
            latency,
            "--compare-naive",
            naive_file,
        )
        assert drawn.returncode == 0, output_of(drawn)
        assert drawn.stdout.startswith("# Migration record: plan `add_phone`")
        assert drawn.stderr.strip() == f"wrote {full}"
        state_only = zdm("report", "--dsn", zdm_dsn, "--html", alone)
        assert state_only.returncode == 0, output_of(state_only)
        yield {
            "record": record,
            "full": full,
            "alone": alone,
            "tmp": tmp,
            "dsn": zdm_dsn,
            "markdown": drawn.stdout,
        }
    finally:
        for n in names:
            drop_database(pg_admin_dsn, n)


def ids(page: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', page.read_text()))


def assert_self_contained(page: Path) -> None:
    text = page.read_text()
    assert "<script" not in text.lower()
    # Every reference is inside the page (markers, clip paths); nothing is fetched.
    refs = re.findall(r'(?:href|src)\s*=\s*"([^"]*)"', text) + re.findall(r"url\(([^)]*)\)", text)
    assert all(r.strip("'\" ").startswith("#") for r in refs), refs
    assert "@import" not in text


def test_the_page_draws_latency_phases_and_every_blocking_unit(pages: dict[str, Any]) -> None:
    page, record = pages["full"], pages["record"]
    found = ids(page)
    for run in ("run-0", "run-1"):
        assert {f"{run}-latency-{s}" for s in ("p50", "p99", "max")} <= found, found
    drawn_phases = {
        re.sub(r"^run-0-phase-\d+-", "", i) for i in found if i.startswith("run-0-phase-")
    }
    assert drawn_phases == {"additive", "dual-write", "backfill", "dual-read", "cleanup"}
    blocking = [s for s in record["statements"] if s["blocks_app"]]
    assert blocking
    assert {i for i in found if re.fullmatch(r"run-0-lock-\d+", i)} == {
        f"run-0-lock-{k}" for k in range(len(blocking))
    }
    naive_phases = {i for i in found if i.startswith("run-1-phase-")}
    assert len(naive_phases) == 5 and "run-1-phase-1-update-every-row" in naive_phases
    text = page.read_text()
    # Beside the chart: the same text report that went to stdout.
    assert "# Migration record: plan `add_phone`" in text
    assert f"{len(blocking)} units held a lock blocking the application" in text
    assert_self_contained(page)


def test_the_page_of_a_run_without_latency_draws_its_state_alone(pages: dict[str, Any]) -> None:
    found = ids(pages["alone"])
    assert not any("latency" in i for i in found)
    assert {"run-0-phase-2-backfill", "run-0-lock-0", "run-0-lock-markers"} <= found
    assert "run-1" not in found
    assert "no application latency given (--latency FILE)" in pages["alone"].read_text()
    assert_self_contained(pages["alone"])


def test_the_page_in_a_headless_browser_shows_a_chart(pages: dict[str, Any]) -> None:
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (apt-get install -y chromium)")
    from matplotlib.image import imread

    png = pages["tmp"] / "full.png"
    shot = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--screenshot={png}",
            "--window-size=1600,1200",
            pages["full"].as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.returncode == 0 and png.exists(), shot.stderr
    image = imread(str(png))[:, :, :3]
    height, width, _ = image.shape
    chart = image[: int(height * 0.75), : int(width * 0.6)]
    assert chart.std() > 0.1  # not a blank area

    def pixels(colour: str) -> int:
        rgb = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        return int((abs(chart - rgb).max(axis=2) < 0.1).sum())

    # The p50 and p99 lines of both runs and the lock markers are on screen.
    assert pixels(P50) > 300 and pixels(P99) > 300 and pixels(LOCK) > 40, (
        pixels(P50),
        pixels(P99),
        pixels(LOCK),
    )
    # The text report is rendered to the right of the chart.
    text_area = image[: int(height * 0.5), int(width * 0.65) :]
    assert (text_area.max(axis=2) < 0.3).sum() > 500


def test_latency_files_in_csv_and_json(tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("timestamp,latency_ms\n1700000000.5,1.5\n2023-11-14T22:13:21Z,3\n# note\n\n")
    assert read_latency(csv).samples == [(1700000000.5, 1.5), (1700000001.0, 3.0)]
    pairs = tmp_path / "b.json"
    pairs.write_text(
        '[[1700000000, 2], {"timestamp": "2023-11-14T22:13:21+00:00", "latency_ms": 4}]'
    )
    assert read_latency(pairs).samples == [(1700000000.0, 2.0), (1700000001.0, 4.0)]
    full = tmp_path / "c.json"
    full.write_text('{"samples": [[1, 2]], "phases": [{"name": "UPDATE", "start": 1, "end": 3}]}')
    assert read_latency(full).phases == [Span("UPDATE", 1.0, 3.0)]

    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,latency_ms\n1700000000,1\n1700000001,slow\n")
    with pytest.raises(LatencyFileError, match=r"bad\.csv:3: expected timestamp,latency_ms"):
        read_latency(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,latency_ms\n")
    with pytest.raises(LatencyFileError, match="no latency samples"):
        read_latency(empty)
    negative = tmp_path / "neg.json"
    negative.write_text("[[1, -2]]")
    with pytest.raises(LatencyFileError, match=r"neg\.json: the list\[0\]"):
        read_latency(negative)


def test_buckets_are_per_second_percentiles() -> None:
    samples = [(100.0 + i / 100, float(i + 1)) for i in range(100)] + [(101.5, 7.0)]
    tl = Timeline("t", 100.0, 102.0, samples)
    first, second = buckets(tl, 0.0, 3.0, 1.0)
    assert (first.start, first.count, first.p50, first.p99, first.max) == (0.0, 100, 50, 99, 100)
    assert (second.start, second.count, second.max) == (1.0, 1, 7.0)


def test_bad_input_is_one_line_and_exit_2(pages: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "app.csv"
    bad.write_text("1700000000,1\nnot a time,2\n")
    done = zdm("report", "--dsn", pages["dsn"], "--html", tmp_path / "p.html", "--latency", bad)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().startswith(f"error: {bad}:2: expected timestamp,latency_ms")
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "p.html").exists()
    elsewhere = tmp_path / "old.csv"
    elsewhere.write_text("2001-01-01T00:00:00,1\n")
    done = zdm(
        "report", "--dsn", pages["dsn"], "--html", tmp_path / "p.html", "--latency", elsewhere
    )
    assert done.returncode == 0 and "warning: no statement of" in done.stderr, output_of(done)
    assert "no latency samples in this run's time" in (tmp_path / "p.html").read_text()
    alone = zdm("report", "--dsn", pages["dsn"], "--latency", bad)
    assert alone.returncode == 2 and "give --html FILE" in alone.stderr
    nowhere = tmp_path / "missing" / "p.html"
    for args in (["report", "--dsn", pages["dsn"]], ["demo", "--rows", "10"]):
        done = zdm(*args, "--html", nowhere)
        assert done.returncode == 2 and done.stdout == "", output_of(done)
        assert done.stderr.strip() == (
            f"error: cannot write the page to {nowhere}: no directory {nowhere.parent}"
        )


def test_the_traffic_tool_writes_a_latency_file(dsn: str, tmp_path: Path) -> None:
    """`python -m zdm.demo.traffic --latency-out`: the README's way to record latency for a run."""
    seed(dsn, 100)
    out = tmp_path / "app.csv"
    before = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "zdm.demo.traffic",
            "--dsn",
            dsn,
            "--seconds",
            "1",
            "--threads",
            "1",
            "--pause-ms",
            "5",
            "--latency-out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    samples = read_latency(out).samples
    assert len(samples) > 10
    assert before - 1 < samples[0][0] < samples[-1][0] < time.time()


def test_edge_cases_draw_without_failing() -> None:
    """Zero latencies, a run whose samples all fall outside it, a run without any: all drawn."""
    from zdm.report_html import page

    zeros = Timeline("zeros", 100.0, 110.0, [(100.0 + i / 10, 0.0) for i in range(100)])
    outside = Timeline("outside", 100.0, 110.0, [(5.0, 1.0)], [Span("additive", 100.0, 101.0)])
    nothing = Timeline("nothing", 100.0, 100.0)
    for timelines in ([zeros, outside], [outside], [nothing], []):
        assert page("t", timelines, "text").startswith("<!DOCTYPE html>")
    assert "no latency samples in this run" in page("t", [zeros, outside], "")
