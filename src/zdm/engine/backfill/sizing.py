"""How large a batch is, and how long it may wait for a lock or run.

`batch_size: auto` sizes each worker's batches to `batch_time`: at most 1.5x larger after a
fast batch, at once smaller in proportion after a slow one, and a batch that hits its statement
timeout (5x the target) is rolled back, halved and retried on the same range. The batch's
duration is how long an application write may wait on one of its row locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zdm.engine.retry import lock_timeout_ms
from zdm.plan import Settings

INITIAL_AUTO_BATCH = 1000
GROWTH = 1.5
# An auto-sized batch is cancelled at this many times its target duration, then halved.
TIMEOUT_FACTOR = 5


ROW_LOCK_WAIT_MS = 20


MIN_STATEMENT_TIMEOUT_MS = 1000


def batch_lock_timeout_ms(settings: Settings, attempt: int) -> int:
    """A batch's first attempt waits at most `ROW_LOCK_WAIT_MS` for a lock: long enough for an
    application's short transaction to end, short enough that the rows the batch already
    holds keep no one waiting (and that a deadlock with the application ends on zdm's side,
    long before `deadlock_timeout`). Its retries lock only free rows (`skip_locked_sql`), so
    their lock timeout, growing as for every unit, bounds only the wait for the table lock."""
    if attempt == 1:
        return min(ROW_LOCK_WAIT_MS, lock_timeout_ms(settings, 1))
    return lock_timeout_ms(settings, attempt)


@dataclass
class BatchSizer:
    """Sizes batches to a target duration: grow at most 1.5x, shrink in proportion when slow.

    The size follows an estimate of the cost of one row: a slow batch raises it at once (the
    next batch is smaller in proportion), fast batches lower it by halves, so one lucky batch
    does not make the next one overshoot.
    """

    size: int
    auto: bool
    target_ms: float
    minimum: int
    maximum: int
    ms_per_row: float | None = None

    @classmethod
    def of(cls, options: Any, resumed: int | None = None) -> BatchSizer:
        auto = options.batch_size == "auto"
        if auto:
            start = resumed or INITIAL_AUTO_BATCH
            size = max(options.min_batch, min(options.max_batch, start))
        else:
            size = int(options.batch_size)
        return cls(size, auto, float(options.batch_time), options.min_batch, options.max_batch)

    def after(self, rows: int, ms: float) -> None:
        """Learns from a committed batch of `rows` rows that took `ms`."""
        if not self.auto or rows <= 0:
            return
        cost = max(ms, 1.0) / rows
        if rows < self.size and cost * self.size <= self.target_ms:
            return  # the short last batch of a range says nothing about larger ones
        if self.ms_per_row is None or cost >= self.ms_per_row:
            self.ms_per_row = cost
        else:
            self.ms_per_row = (self.ms_per_row + cost) / 2
        self._set(min(self.target_ms / self.ms_per_row, self.size * GROWTH))

    def halve(self) -> bool:
        """After a statement timeout; False when the batch cannot get any smaller."""
        if not self.auto or self.size <= self.minimum:
            return False
        self._set(self.size / 2)
        return True

    def _set(self, size: float) -> None:
        self.size = max(self.minimum, min(self.maximum, int(size)))

    @property
    def statement_timeout_ms(self) -> int:
        """An auto batch that runs 5x over target is cancelled, halved and retried; 0 = none."""
        if not self.auto:
            return 0
        return int(max(self.target_ms * TIMEOUT_FACTOR, MIN_STATEMENT_TIMEOUT_MS))
