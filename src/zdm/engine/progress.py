"""How a running backfill shows its progress: a live bar on a terminal, log events otherwise.

Both show the same snapshot: rows done of rows estimated, rows/s over the last seconds, ETA,
batch size, workers and what the walk waits for.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

# Seconds of history behind "rows/s": long enough to smooth batches, short enough to follow
# a throttle.
RATE_WINDOW_S = 10.0
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class Snapshot:
    table: str
    rows_done: int
    rows_estimated: int
    rows_per_s: float
    batch_size: int
    workers: int
    batches: int
    throttle: str | None

    @property
    def eta_s(self) -> float | None:
        if self.rows_per_s <= 0:
            return None
        return max(self.rows_estimated - self.rows_done, 0) / self.rows_per_s


class RateWindow:
    """Rows per second over the last RATE_WINDOW_S seconds of wall time (pauses included)."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, rows_total: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.samples.append((now, rows_total))
        while len(self.samples) > 2 and now - self.samples[1][0] > self.window_s:
            self.samples.popleft()

    def rate(self, now: float | None = None) -> float:
        if len(self.samples) < 2:
            return 0.0
        now = time.monotonic() if now is None else now
        t0, r0 = self.samples[0]
        _, r1 = self.samples[-1]
        return (r1 - r0) / max(now - t0, 1e-3)


class View(Protocol):
    def update(self, snap: Snapshot) -> None: ...

    def close(self, snap: Snapshot) -> None: ...


class LogView:
    """`backfill_progress` events every few seconds: what a deploy log or a JSON pipeline gets."""

    def __init__(self, log: Any, every_s: float = PROGRESS_EVERY_S) -> None:
        self.log = log
        self.every_s = every_s
        self.last = time.monotonic()

    def update(self, snap: Snapshot) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        self.log.info(
            "backfill_progress",
            table=snap.table,
            rows_done=snap.rows_done,
            rows_estimated=snap.rows_estimated,
            rows_per_s=round(snap.rows_per_s),
            eta_s=round(snap.eta_s) if snap.eta_s is not None else None,
            batch_size=snap.batch_size,
            workers=snap.workers,
            throttle=snap.throttle,
        )

    def close(self, snap: Snapshot) -> None:
        pass


class BarView:
    """A rich progress bar on stderr; log lines written meanwhile scroll above it."""

    def __init__(self, snap: Snapshot) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]backfill[/bold] {task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/~{task.total:,.0f} rows"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}"),
            console=Console(file=sys.stderr),
            transient=False,
            redirect_stdout=False,
        )
        self.task = self.progress.add_task(
            snap.table, total=max(snap.rows_estimated, 1), rate="", detail=""
        )
        self.progress.start()

    def update(self, snap: Snapshot) -> None:
        detail = f"batch {snap.batch_size:,}"
        if snap.workers > 1:
            detail += f" x {snap.workers} workers"
        if snap.throttle:
            detail += f" [yellow]waiting: {snap.throttle}[/yellow]"
        self.progress.update(
            self.task,
            completed=snap.rows_done,
            total=max(snap.rows_estimated, snap.rows_done, 1),
            rate=f"{snap.rows_per_s:,.0f} rows/s",
            detail=detail,
        )

    def close(self, snap: Snapshot) -> None:
        self.update(snap)
        self.progress.stop()


def make_view(snap: Snapshot, log: Any, mode: str = "auto") -> View:
    """The bar when stderr is a terminal (or `mode` is "bar"), log events otherwise."""
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        return BarView(snap)
    return LogView(log)
