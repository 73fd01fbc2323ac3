"""What the report's chart draws: runs on a time axis (phases, units holding locks) and the
application's latency, read from the files `zdm report --latency` takes (CSV or JSON), bucketed
per second. Plain Python: nothing here needs the optional plotting library."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zdm.stats import percentile

MAX_BUCKETS = 1200
"""Longer runs are drawn in wider buckets (2 s, 3 s, ...) so that the page stays light."""

Sample = tuple[float, float]
"""(epoch seconds when the statement started, its latency in ms)."""


class LatencyFileError(Exception):
    """A latency file that cannot be read; the message says where and what was expected."""


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
                f' {{"timestamp": ..., "latency_ms": ...}}, got {json.dumps(row)[:80]}'
            ) from None
    for i, ph in enumerate(phases):
        try:
            found.phases.append(
                Span(str(ph["name"]), _timestamp(ph["start"]), _timestamp(ph["end"]))
            )
        except (KeyError, TypeError, ValueError):
            raise LatencyFileError(
                f'{p}: phases[{i}]: expected {{"name", "start", "end"}}, got {json.dumps(ph)[:80]}'
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
            Bucket(
                lo + i * width,
                len(values),
                percentile(values, 50),
                percentile(values, 99),
                values[-1],
            )
        )
    return out


def window(timelines: Sequence[Timeline]) -> tuple[float, float, float]:
    """The x range shared by every timeline (a margin around the longest), and a bucket width."""
    longest = max(t.end - t.origin for t in timelines)
    pad = max(3.0, 0.05 * longest)
    lo, hi = -pad, longest + pad
    return lo, hi, float(max(1, math.ceil((hi - lo) / MAX_BUCKETS)))
