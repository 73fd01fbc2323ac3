"""`zdm report --html` and `zdm demo --html`: the run as a picture, in one self-contained page.

The page draws the application's statement latency per second (p50, p99, max) with the run's
phases as bands and every unit that held a lock blocking the application marked, beside the
text report. zdm does not see the application's latency: the demo measures it itself, a real
run's comes from a file (`--latency`: timestamp and latency of each statement, CSV or JSON);
without one the page draws the phases and lock units from the run's state alone.

The chart is an SVG that matplotlib (the optional ``zdm[report]`` extra) renders into the page:
no JavaScript, no fonts or styles fetched, nothing but the file. matplotlib is imported only by
`chart_svg`; what it draws (zdm.timeline) is plain Python.
"""

from __future__ import annotations

import html
import io
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from zdm.timeline import (
    Timeline,
    buckets,
    read_latency,
    timeline_of_file,
    timeline_of_record,
    window,
)

INSTALL_HINT = "pip install 'zdm[report]'"

# Colours of the series, also what the browser test looks for in the screenshot.
P50, P99, MAX, LOCK = "#1f77b4", "#ff7f0e", "#7f7f7f", "#d62728"
BANDS = ("#e8eef7", "#f3f3e6")


class ReportExtraMissing(Exception):
    """The page cannot be drawn: the optional plotting library is not installed."""

    def __init__(self) -> None:
        super().__init__(
            f"drawing the report needs matplotlib, the optional 'report' extra: {INSTALL_HINT}"
        )


class PageError(Exception):
    """The page cannot be written where it was asked for."""


def require_matplotlib() -> None:
    """Raise ReportExtraMissing unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportExtraMissing from None


def check_page_path(path: Path) -> None:
    """Refuse, before any work, a page path whose directory is missing or that is a directory."""
    if path.is_dir():
        raise PageError(f"cannot write the page to {path}: it is a directory")
    if not path.absolute().parent.is_dir():
        raise PageError(f"cannot write the page to {path}: no directory {path.absolute().parent}")


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
        drawn = [buckets(tl, lo, hi, width) for tl in timelines]
        any_latency = any(drawn)
        for i, (ax, tl, rows) in enumerate(zip(axes, timelines, drawn, strict=True)):
            ax.set_gid(f"run-{i}")
            if rows:
                x = [b.start for b in rows] + [rows[-1].start + width]
                for name, colour, lw in (("max", MAX, 1.0), ("p99", P99, 1.6), ("p50", P50, 1.6)):
                    y = [max(getattr(b, name), 0.01) for b in rows]
                    (line,) = ax.step(
                        x, [*y, y[-1]], where="post", color=colour, lw=lw, label=f"{name} ms"
                    )
                    line.set_gid(f"run-{i}-latency-{name}")
            elif tl.samples:
                ax.text(
                    0.5,
                    0.5,
                    "no latency samples in this run's time",
                    transform=ax.transAxes,
                    ha="center",
                    color="#666",
                )
            else:
                ax.text(
                    0.5,
                    0.5,
                    "no application latency given (--latency FILE): phases and"
                    " lock units from the run's state",
                    transform=ax.transAxes,
                    ha="center",
                    color="#666",
                )
            top = blended_transform_factory(ax.transData, ax.transAxes)
            for j, band in enumerate(tl.bands):
                a, b = band.start - tl.origin, band.end - tl.origin
                patch = ax.axvspan(a, b, color=BANDS[j % 2], zorder=0, lw=0)
                patch.set_gid(f"run-{i}-phase-{j}-{_slug(band.label)}")
            for a, b, label in _band_labels(tl, 0.06 * (hi - lo)):
                ax.text(
                    (a + b) / 2,
                    0.97,
                    label,
                    transform=top,
                    ha="center",
                    va="top",
                    rotation=90 if b - a < 0.06 * (hi - lo) else 0,
                    fontsize=8,
                    color="#333",
                    clip_on=True,
                )
            if tl.locks:
                xs = [u.start - tl.origin for u in tl.locks]
                for k, (u, xv) in enumerate(zip(tl.locks, xs, strict=True)):
                    wide = u.end - u.start > (hi - lo) / 200
                    mark = ax.axvspan(
                        xv,
                        max(u.end - tl.origin, xv + (hi - lo) / 2000),
                        color=LOCK,
                        alpha=0.18 if wide else 0.7,
                        lw=0,
                        zorder=1,
                    )
                    mark.set_gid(f"run-{i}-lock-{k}")
                longest = max(u.end - u.start for u in tl.locks)
                (ticks,) = ax.plot(
                    xs,
                    [1.0] * len(xs),
                    transform=top,
                    ls="none",
                    marker="v",
                    color=LOCK,
                    ms=7,
                    clip_on=False,
                    zorder=4,
                    label=f"unit holding a lock that blocks the app: {len(xs)},"
                    f"\nthe longest {_ms(longest)}",
                )
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
                ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
        axes[-1].set_xlabel("seconds since the migration started")
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


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
    svg = chart_svg(timelines) if timelines else "<p>No run to draw.</p>"
    notes = []
    for tl in timelines:
        longest = max((u.end - u.start for u in tl.locks), default=None)
        held = (
            (
                f"; {len(tl.locks)} units held a lock blocking the application, the longest"
                f" {_ms(longest)}"
            )
            if longest is not None
            else ""
        )
        notes.append(
            f"<b>{html.escape(tl.title)}</b>: latency from"
            f" {html.escape(tl.source or 'nowhere (none given)')}{held}."
        )
    caption = (
        "Each line is the application's statements that started in one bucket: p50, p99 and"
        " max latency (log scale). Shaded bands are the run's phases (the naive way: its"
        " statements); red marks are units that held a lock which blocks the application's"
        " reads or writes, drawn as long as they held it. " + " ".join(notes)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f'<h1>{html.escape(title)}</h1>\n<div class="run">\n'
        f'<figure id="chart">\n{svg}\n<figcaption>{caption}</figcaption>\n</figure>\n'
        f'<pre id="report">{html.escape(text)}</pre>\n</div>\n</body>\n</html>\n'
    )


def write_page(path: str | Path, title: str, timelines: Sequence[Timeline], text: str) -> None:
    try:
        Path(path).write_text(page(title, timelines, text), encoding="utf-8")
    except OSError as e:
        raise PageError(f"cannot write the page to {path}: {e.strerror}") from None


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
    from zdm.report import EXIT_NO_RUN, EXIT_OK, as_json, known_format, latest_record, markdown

    require_matplotlib()
    check_page_path(page_path)
    if not known_format(fmt):
        return EXIT_NO_RUN
    app = read_latency(latency) if latency is not None else None
    naive_run = read_latency(naive) if naive is not None else None
    record = latest_record(dsn, plan, state_schema=state_schema)
    if record is None:
        return EXIT_NO_RUN
    text = markdown(record)
    out.write(as_json(record) if fmt == "json" else text)
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
    lo, hi, width = window(timelines)
    if app is not None and not buckets(timelines[0], lo, hi, width):
        print(
            f"warning: no statement of {latency} started during the run (give times in UTC or"
            " with their zone); the page shows the run without latency",
            file=sys.stderr,
        )
    title = f"zdm report: plan {record['plan']['name']}, run {record['run']['id']}"
    write_page(page_path, title, timelines, text)
    print(f"wrote {page_path}", file=sys.stderr)
    return EXIT_OK
