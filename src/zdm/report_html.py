"""`zdm report --html` and `zdm demo --html`: the run as a picture, in one self-contained page.

The page draws the application's statement latency per second (p50, p99, max) with the run's
phases as bands and every unit that held a lock blocking the application marked, beside the
text report. zdm does not see the application's latency: the demo measures it itself, a real
run's comes from a file (`--latency`: timestamp and latency of each statement, CSV or JSON);
without one the page draws the phases and lock units from the run's state alone.

The chart is an SVG that matplotlib (the optional ``zdm[report]`` extra) renders into the page:
no JavaScript, no fonts or styles fetched, nothing but the file. matplotlib is imported only by
`chart_svg`, so the rest (reading files, bucketing) works without the extra.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

INSTALL_HINT = "pip install 'zdm[report]'"

# Colours of the series, also what the browser test looks for in the screenshot.
P50, P99, MAX, LOCK = "#1f77b4", "#ff7f0e", "#7f7f7f", "#d62728"
BANDS = ("#e8eef7", "#f3f3e6")
MAX_BUCKETS = 1200
"""Longer runs are drawn in wider buckets (2 s, 3 s, ...) so that the page stays light."""

Sample = tuple[float, float]
"""(epoch seconds when the statement started, its latency in ms)."""


class ReportExtraMissing(Exception):
    """The page cannot be drawn: the optional plotting library is not installed."""

    def __init__(self) -> None:
        super().__init__(
            f"drawing the report needs matplotlib, the optional 'report' extra: {INSTALL_HINT}"
        )


class LatencyFileError(Exception):
    """A latency file that cannot be read; the message says where and what was expected."""


def require_matplotlib() -> None:
    """Raise ReportExtraMissing unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportExtraMissing from None


@dataclass(frozen=True)
class Span:
    """Something that took time: a phase, a naive statement, a unit holding a lock."""

    label: str
    start: float
    end: float


@dataclass(frozen=True)
class Timeline:
    """One run on the chart: its time 0 is `origin` (epoch seconds), the migration's start."""

    title: str
    origin: float
    end: float
    samples: Sequence[Sample] = ()
    bands: Sequence[Span] = ()
    locks: Sequence[Span] = ()
    """Units that held a lock blocking the application's reads or writes."""
    source: str = ""
    """Where the latency came from, for the caption."""


@dataclass(frozen=True)
class Bucket:
    start: float
    """Seconds since the timeline's origin."""
    count: int
    p50: float
    p99: float
    max: float


@dataclass
class LatencyFile:
    samples: list[Sample] = field(default_factory=list)
    phases: list[Span] = field(default_factory=list)
    """Named spans the file brings (`phases` in its JSON form): the naive run's statements."""


# -- reading ---------------------------------------------------------------------------------


def _timestamp(value: Any) -> float:
    """Epoch seconds, or an ISO 8601 time (UTC when it names no zone)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()


def _sample(ts: Any, ms: Any) -> Sample:
    latency = float(ms)
    if not math.isfinite(latency) or latency < 0:
        raise ValueError(ms)
    return _timestamp(ts), latency


def read_latency(path: str | Path) -> LatencyFile:
    """A latency file: CSV rows `timestamp,latency_ms` (a header row is allowed), or JSON: a list
    of `[timestamp, latency_ms]` pairs or `{"timestamp", "latency_ms"}` objects, or an object
    `{"samples": [...], "phases": [{"name", "start", "end"}]}`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LatencyFileError(f"{p}: cannot read the latency file: {e}") from None
    stripped = text.lstrip()
    found = _read_json(p, stripped) if stripped[:1] in ("[", "{") else _read_csv(p, text)
    if not found.samples and not found.phases:
        raise LatencyFileError(f"{p}: no latency samples in the file")
    found.samples.sort()
    return found


def _read_csv(p: Path, text: str) -> LatencyFile:
    found = LatencyFile()
    first = True
    for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        header, first = first and not _numeric(row[0]), False
        try:
            if len(row) < 2:
                raise ValueError(row)
            found.samples.append(_sample(row[0], row[1]))
        except ValueError:
            if header:
                continue
            raise LatencyFileError(
                f"{p}:{line}: expected timestamp,latency_ms (epoch seconds or ISO 8601, then"
                f" milliseconds), got {','.join(row)[:80]!r}"
            ) from None
    return found


def _numeric(text: str) -> bool:
    return re.match(r"\s*[-+]?\d", text) is not None


def _read_json(p: Path, text: str) -> LatencyFile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LatencyFileError(f"{p}:{e.lineno}: not valid JSON: {e.msg}") from None
    found = LatencyFile()
    rows: Any = data if isinstance(data, list) else data.get("samples", [])
    phases: Any = [] if isinstance(data, list) else data.get("phases", [])
    where = "samples" if isinstance(data, dict) else "the list"
    if not isinstance(rows, list) or not isinstance(phases, list):
        raise LatencyFileError(f"{p}: expected lists under 'samples' and 'phases'")
    for i, row in enumerate(rows):
        try:
            if isinstance(row, dict):
                found.samples.append(_sample(row["timestamp"], row["latency_ms"]))
            else:
                ts, ms = row
                found.samples.append(_sample(ts, ms))
        except (KeyError, TypeError, ValueError):
            raise LatencyFileError(
                f"{p}: {where}[{i}]: expected [timestamp, latency_ms] or"
                f" {{\"timestamp\": ..., \"latency_ms\": ...}}, got {json.dumps(row)[:80]}"
            ) from None
    for i, ph in enumerate(phases):
        try:
            found.phases.append(
                Span(str(ph["name"]), _timestamp(ph["start"]), _timestamp(ph["end"]))
            )
        except (KeyError, TypeError, ValueError):
            raise LatencyFileError(
                f"{p}: phases[{i}]: expected {{\"name\", \"start\", \"end\"}},"
                f" got {json.dumps(ph)[:80]}"
            ) from None
    return found


def write_latency_csv(path: str | Path, samples: Iterable[Sample]) -> int:
    """Writes samples in the CSV form `read_latency` reads; returns how many."""
    n = 0
    with Path(path).open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["timestamp", "latency_ms"])
        for ts, ms in samples:
            out.writerow([f"{ts:.6f}", f"{ms:.3f}"])
            n += 1
    return n


def write_latency_json(path: str | Path, samples: Iterable[Sample], phases: Iterable[Span]) -> None:
    """Writes samples and named spans (a naive run's statements) in the JSON form that
    `read_latency` reads, for `--compare-naive`."""
    data = {
        "samples": [[round(ts, 6), round(ms, 3)] for ts, ms in samples],
        "phases": [{"name": p.label, "start": p.start, "end": p.end} for p in phases],
    }
    Path(path).write_text(json.dumps(data) + "\n", encoding="utf-8")


# -- timelines -------------------------------------------------------------------------------


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def timeline_of_record(
    record: dict[str, Any], samples: Sequence[Sample] = (), *, title: str = "", source: str = ""
) -> Timeline:
    """A run read back by `zdm.report.collect`: its phases as bands, its blocking units as
    lock marks (a unit's span ends when it finished and lasted as long as it held the lock)."""
    run = record["run"]
    origin = _ts(run["started_at"]) or 0.0
    end = origin + (run["duration_s"] or 0.0)
    bands = []
    for ph in record["phases"]:
        start = _ts(ph["started_at"])
        if start is not None:
            bands.append(Span(ph["phase"], start, _ts(ph["finished_at"]) or end))
    locks = []
    for st in record["statements"]:
        finished = _ts(st["finished_at"])
        if st["blocks_app"] and finished is not None:
            held = (st["held_ms"] or 0) / 1000
            label = f"{st['unit']} ({st['lock']}, {st['held_ms']} ms)"
            locks.append(Span(label, finished - held, finished))
    end = max([end, *(b.end for b in bands), *(u.end for u in locks)])
    name = f"zdm: plan {record['plan']['name']}, run {run['id']}"
    return Timeline(title or name, origin, end, samples, bands, locks, source)


def timeline_of_file(found: LatencyFile, *, title: str, source: str) -> Timeline:
    """A run known only from a latency file (the naive way): its phases are its statements."""
    times = [s[0] for s in found.samples]
    origin = min((p.start for p in found.phases), default=min(times, default=0.0))
    end = max((p.end for p in found.phases), default=max(times, default=origin))
    return Timeline(title, origin, end, found.samples, found.phases, (), source)


def buckets(timeline: Timeline, lo: float, hi: float, width: float) -> list[Bucket]:
    """Latency per `width` seconds over [lo, hi) (seconds since the origin): p50, p99, max."""
    by: dict[int, list[float]] = {}
    for ts, ms in timeline.samples:
        at = ts - timeline.origin
        if lo <= at < hi:
            by.setdefault(math.floor((at - lo) / width), []).append(ms)
    out = []
    for i in sorted(by):
        values = sorted(by[i])
        out.append(
            Bucket(lo + i * width, len(values), _rank(values, 50), _rank(values, 99), values[-1])
        )
    return out


def _rank(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile, as zdm.traffic computes it."""
    return ordered[min(len(ordered), max(1, math.ceil(pct / 100 * len(ordered)))) - 1]


def window(timelines: Sequence[Timeline]) -> tuple[float, float, float]:
    """The x range shared by every timeline (a margin around the longest), and a bucket width."""
    longest = max(t.end - t.origin for t in timelines)
    pad = max(3.0, 0.05 * longest)
    lo, hi = -pad, longest + pad
    return lo, hi, float(max(1, math.ceil((hi - lo) / MAX_BUCKETS)))


# -- drawing ---------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _band_labels(tl: Timeline, narrow: float) -> list[tuple[float, float, str]]:
    """Where to write the bands' names: adjacent narrow bands share one label."""
    out: list[tuple[float, float, str]] = []
    for band in tl.bands:
        a, b = band.start - tl.origin, band.end - tl.origin
        if out and b - a < narrow and out[-1][1] - out[-1][0] < narrow and a - out[-1][1] < narrow:
            pa, _, names = out[-1]
            out[-1] = (pa, b, f"{names}, {band.label}")
        else:
            out.append((a, b, band.label))
    return out


def chart_svg(timelines: Sequence[Timeline]) -> str:
    """The timelines one above the other on the same scales, as an SVG element."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
        from matplotlib.transforms import blended_transform_factory
    except ImportError:
        raise ReportExtraMissing from None

    lo, hi, width = window(timelines)
    per = "second" if width == 1 else f"{width:.0f} s"
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "zdm", "font.size": 9}):
        fig = Figure(figsize=(11, 0.8 + 3.4 * len(timelines)), layout="constrained")
        axes = fig.subplots(len(timelines), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
        any_latency = any(t.samples for t in timelines)
        for i, (ax, tl) in enumerate(zip(axes, timelines, strict=True)):
            ax.set_gid(f"run-{i}")
            rows = buckets(tl, lo, hi, width)
            if rows:
                x = [b.start for b in rows] + [rows[-1].start + width]
                for name, colour, lw in (("max", MAX, 1.0), ("p99", P99, 1.6), ("p50", P50, 1.6)):
                    y = [max(getattr(b, name), 0.01) for b in rows]
                    (line,) = ax.step(
                        x, [*y, y[-1]], where="post", color=colour, lw=lw, label=f"{name} ms"
                    )
                    line.set_gid(f"run-{i}-latency-{name}")
            elif any_latency:
                ax.text(0.5, 0.5, "no latency samples in this run's time", transform=ax.transAxes,
                        ha="center", color="#666")
            else:
                ax.text(0.5, 0.5, "no application latency given (--latency FILE): phases and"
                        " lock units from the run's state", transform=ax.transAxes, ha="center",
                        color="#666")
            top = blended_transform_factory(ax.transData, ax.transAxes)
            for j, band in enumerate(tl.bands):
                a, b = band.start - tl.origin, band.end - tl.origin
                patch = ax.axvspan(a, b, color=BANDS[j % 2], zorder=0, lw=0)
                patch.set_gid(f"run-{i}-phase-{j}-{_slug(band.label)}")
            for a, b, label in _band_labels(tl, 0.06 * (hi - lo)):
                ax.text((a + b) / 2, 0.97, label, transform=top, ha="center", va="top",
                        rotation=90 if b - a < 0.06 * (hi - lo) else 0, fontsize=8,
                        color="#333", clip_on=True)
            if tl.locks:
                xs = [u.start - tl.origin for u in tl.locks]
                for k, (u, xv) in enumerate(zip(tl.locks, xs, strict=True)):
                    wide = u.end - u.start > (hi - lo) / 200
                    mark = ax.axvspan(xv, max(u.end - tl.origin, xv + (hi - lo) / 2000),
                                      color=LOCK, alpha=0.18 if wide else 0.7, lw=0, zorder=1)
                    mark.set_gid(f"run-{i}-lock-{k}")
                longest = max(u.end - u.start for u in tl.locks)
                (ticks,) = ax.plot(xs, [1.0] * len(xs), transform=top, ls="none", marker="v",
                                   color=LOCK, ms=7, clip_on=False, zorder=4,
                                   label=f"unit holding a lock that blocks the app: {len(xs)},"
                                   f"\nthe longest {_ms(longest)}")
                ticks.set_gid(f"run-{i}-lock-markers")
            ax.axvline(0, color="#444", lw=0.8, ls=":")
            ax.set_title(tl.title, loc="left", fontsize=10)
            ax.set_xlim(lo, hi)
            if any_latency:
                ax.set_yscale("log")
                ax.set_ylabel(f"latency per {per}, ms")
            else:
                ax.set_yticks([])
            ax.grid(axis="y", color="#ddd", lw=0.6)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8,
                          frameon=False)
        axes[-1].set_xlabel("seconds since the migration started")
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


# -- the page --------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px; color: #222; }
h1 { font-size: 18px; margin: 0 0 12px; }
.run { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { flex: 3 1 760px; margin: 0; }
figure svg { width: 100%; height: auto; }
figcaption { font-size: 13px; color: #444; margin-top: 6px; line-height: 1.4; }
pre { flex: 2 1 420px; margin: 0; font-size: 12px; background: #f6f6f6; padding: 12px;
      white-space: pre-wrap; overflow-wrap: anywhere; }
"""


def page(title: str, timelines: Sequence[Timeline], text: str) -> str:
    """The HTML page: the chart beside the text report, nothing loaded from anywhere."""
    svg = chart_svg(timelines)
    notes = []
    for tl in timelines:
        longest = max((u.end - u.start for u in tl.locks), default=None)
        held = (f"; {len(tl.locks)} units held a lock blocking the application, the longest"
                f" {_ms(longest)}") if longest is not None else ""
        notes.append(f"<b>{html.escape(tl.title)}</b>: latency from"
                     f" {html.escape(tl.source or 'nowhere (none given)')}{held}.")
    caption = (
        "Each line is the application's statements that started in one bucket: p50, p99 and"
        " max latency (log scale). Shaded bands are the run's phases (the naive way: its"
        " statements); red marks are units that held a lock which blocks the application's"
        " reads or writes, drawn as long as they held it. " + " ".join(notes)
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<div class=\"run\">\n"
        f"<figure id=\"chart\">\n{svg}\n<figcaption>{caption}</figcaption>\n</figure>\n"
        f"<pre id=\"report\">{html.escape(text)}</pre>\n</div>\n</body>\n</html>\n"
    )


def write_page(path: str | Path, title: str, timelines: Sequence[Timeline], text: str) -> None:
    Path(path).write_text(page(title, timelines, text), encoding="utf-8")


# -- `zdm report --html` ---------------------------------------------------------------------


def report_page_command(
    dsn: str,
    plan: str | None,
    fmt: str,
    out: TextIO,
    *,
    page_path: Path,
    latency: Path | None = None,
    naive: Path | None = None,
    state_schema: str = "zdm",
) -> int:
    """The text report on `out`, as `zdm report` writes it, and the page at `page_path`."""
    from zdm.engine.session import connect
    from zdm.report import EXIT_NO_RUN, EXIT_OK, FORMATS, collect, markdown

    require_matplotlib()
    if fmt not in FORMATS:
        print(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}", file=sys.stderr)
        return EXIT_NO_RUN
    app = read_latency(latency) if latency is not None else None
    naive_run = read_latency(naive) if naive is not None else None
    with connect(dsn, "report") as conn:
        record = collect(conn, dsn, plan, state_schema=state_schema)
    if record is None:
        what = f"plan {plan}" if plan else "any plan"
        print(f"no run of {what} is recorded in schema {state_schema}", file=sys.stderr)
        return EXIT_NO_RUN
    text = markdown(record)
    out.write(json.dumps(record, indent=2, default=str) + "\n" if fmt == "json" else text)
    source = f"{latency} ({len(app.samples):,} statements)" if app is not None else ""
    timelines = [timeline_of_record(record, app.samples if app else (), source=source)]
    if naive_run is not None:
        timelines.append(
            timeline_of_file(
                naive_run,
                title="the naive way",
                source=f"{naive} ({len(naive_run.samples):,} statements)",
            )
        )
    title = f"zdm report: plan {record['plan']['name']}, run {record['run']['id']}"
    write_page(page_path, title, timelines, text)
    print(f"wrote {page_path}", file=sys.stderr)
    return EXIT_OK
