"""The backfill loop: key-range batches, each committed with its checkpoint, resumable after a kill.

A backfill splits its table's key space into one range per worker; each worker walks its range
on its own connection in batches bounded by `key > last AND key <= upper` (upper found by an
index-only scan, never past the range's end), and each batch commits together with that
worker's checkpoint row, so a kill loses at most the batch in flight and a resume continues
every worker after its last committed key. After each batch a worker reads the range of the
batch before it once more (`reread_sql`), so the proof at the end finds those pages done. The
main thread supervises: it checks throttles and `zdm pause` between batches (workers wait at a
gate while one holds), watches for SIGINT or SIGTERM (workers stop after their current batch),
and shows progress.

`batch_size: auto` sizes each worker's batches to `batch_time`: at most 1.5x larger after a
fast batch, at once smaller in proportion after a slow one, and a batch that hits its statement
timeout (5x the target) is rolled back, halved and retried on the same range. The batch's
duration is how long an application write may wait on one of its row locks.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
import tenacity
from psycopg import errors
from psycopg.conninfo import make_conninfo

from zdm.ddl import BackfillJob
from zdm.engine.backfill_sql import (
    Key,
    batch_sql,
    construction_doubt,
    ctid_batch_sql,
    ctid_unsupported,
    default_where,
    estimate_rows,
    find_key,
    merge_conflict,
    predicate,
    primary_key,
    quoted_name,
    remaining_sql,
    reread_sql,
    row_sql,
    skip_locked_sql,
    skipped_triggers,
    split_keys,
    table_pages,
    tid,
    timeouts_sql,
    upper_bound_sql,
)
from zdm.engine.executor import Executor, StepFailed, _pg_error
from zdm.engine.progress import RateWindow, Snapshot, View, make_view
from zdm.engine.retry import CONTENTION, lock_timeout_ms, retrying
from zdm.engine.session import (
    ConnectionFailed,
    ConnectionLost,
    connect,
    connection_lost,
    server_version,
)
from zdm.engine.throttle import Throttles
from zdm.operations import Context, plan_step
from zdm.plan import PlanStep, Settings
from zdm.state import BackfillRow, Store
from zdm.state.mapping_errors import BAD_ROWS_SHOWN

INITIAL_AUTO_BATCH = 1000
GROWTH = 1.5
# An auto-sized batch is cancelled at this many times its target duration, then halved.
TIMEOUT_FACTOR = 5
ROW_LOCK_WAIT_MS = 20
# Rows a batch passed over because others held them: walked again this many times, pausing
# 50 ms, 100 ms, … between rounds, before the last round waits for their locks.
COME_BACK_TRIES = 5
COME_BACK_PAUSE_S = 0.05
MIN_STATEMENT_TIMEOUT_MS = 1000
PAUSED = "paused by `zdm pause`"
# A batch failing on these is failing on some of its rows' data (class 22: a bad cast, a value
# too long, an invalid regular expression; class 23: a constraint): they are looked for.
DATA_ERRORS = (errors.DataError, errors.IntegrityError)


def batch_lock_timeout_ms(settings: Settings, attempt: int) -> int:
    """A batch's first attempt waits at most `ROW_LOCK_WAIT_MS` for a lock: long enough for an
    application's short transaction to end, short enough that the rows the batch already
    holds keep no one waiting (and that a deadlock with the application ends on zdm's side,
    long before `deadlock_timeout`). Its retries lock only free rows (`skip_locked_sql`), so
    their lock timeout, growing as for every unit, bounds only the wait for the table lock."""
    if attempt == 1:
        return min(ROW_LOCK_WAIT_MS, lock_timeout_ms(settings, 1))
    return lock_timeout_ms(settings, attempt)


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived: the current batch committed and the run stops, resumable."""


@dataclass
class Control:
    """Stop requests from signals, checked between batches."""

    stop: threading.Event = field(default_factory=threading.Event)
    signal_name: str | None = None
    previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: Any) -> None:
            self.signal_name = signal.Signals(signum).name
            self.stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.signal(signum, handler)

    def restore(self) -> None:
        """Gives a library caller its own handlers back when the run ends."""
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        self.previous.clear()


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


@dataclass
class Range:
    """A worker's share of the table: keys after `last` up to `end` (None: the table's edge)."""

    worker: int
    last: list[str] | None
    end: list[str] | None
    done: bool
    rows_done: int
    rows_estimated: int
    batch_size: int | None

    @classmethod
    def of(cls, row: BackfillRow) -> Range:
        return cls(
            row.worker,
            row.last_key,
            row.end_key,
            row.done,
            row.rows_done,
            row.rows_estimated or 0,
            row.batch_size,
        )


@dataclass
class Batch:
    lower: list[str] | None
    upper: list[str]
    walked: int
    updated: int
    ms: float = 0.0


class Shared:
    """What the supervisor and the workers share: the gate, the stop flags, the statistics."""

    def __init__(self, control: Control) -> None:
        self.control = control
        self.abort = threading.Event()
        self.wake = threading.Event()
        self._cond = threading.Condition()
        self.reason: str | None = None
        self.batch_ms: list[float] = []

    def stopping(self) -> bool:
        return self.control.stop.is_set() or self.abort.is_set()

    def hold(self, reason: str | None) -> None:
        """Closes the gate with a reason (workers wait before their next batch), or opens it."""
        with self._cond:
            self.reason = reason
            self._cond.notify_all()

    def pass_gate(self) -> bool:
        """Waits while the gate is closed; False when the walk must stop instead."""
        with self._cond:
            while self.reason is not None and not self.stopping():
                self._cond.wait(0.05)
        return not self.stopping()

    def sleep(self, seconds: float) -> bool:
        """Sleeps between batches; False when the walk must stop instead."""
        deadline = time.monotonic() + seconds
        while not self.stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.control.stop.wait(min(left, 0.05))
        return False


class Worker(threading.Thread):
    """Walks one range on its own connection, batch after batch, until its end or a stop."""

    def __init__(self, bf: Backfiller, key: Key, rng: Range, shared: Shared) -> None:
        super().__init__(daemon=True, name=f"zdm-backfill-{rng.worker}")
        self.bf = bf
        self.key = key
        self.range = rng
        self.shared = shared
        self.sizer = BatchSizer.of(bf.options, rng.batch_size)
        self.settings: Settings = bf.ex.settings
        self.walked = 0
        self.batches = 0
        self.finished = False
        self.error: BaseException | None = None
        self.window = RateWindow()
        self.window.add(0)
        self.started = 0.0
        self._previous: Batch | None = None
        self.skipped: list[Batch] = []
        """Ranges whose batch passed over rows locked by others: walked again at the end."""

    def run(self) -> None:
        self.started = time.monotonic()
        try:
            conn = connect(self.bf.dsn, f"backfill {self.bf.table.name} w{self.range.worker}")
            try:
                self._loop(conn)
            finally:
                conn.close()
        except StepFailed as e:
            self.error = e
        except CONTENTION as e:
            self.error = StepFailed(
                f"{self.bf.label}: worker {self.range.worker} gave up after"
                f" {self.settings.lock_retries} attempts: {_pg_error(e)}"
            )
        except psycopg.Error as e:
            self.error = (
                ConnectionLost(f"{self.bf.label}: worker {self.range.worker}: {_pg_error(e)}")
                if connection_lost(e)
                else StepFailed(f"{self.bf.label}: {_pg_error(e)}")
            )
        except ConnectionFailed as e:
            self.error = ConnectionLost(f"{self.bf.label}: {e}")
        except BaseException as e:
            self.error = e
        finally:
            if self.error is not None:
                self.shared.abort.set()
            self.shared.wake.set()

    def _loop(self, conn: psycopg.Connection[Any]) -> None:
        pause_s = self.bf.options.pause / 1000
        while True:
            if not self.shared.pass_gate():
                return
            batch = self._batch(conn)
            if batch is None:
                self._come_back(conn)
                if self.shared.stopping():
                    return
                self.bf.store.backfill_finished(
                    conn, self.bf.run_id, self.bf.ordinals, self.range.worker
                )
                self.finished = True
                self.bf.log.info(
                    "backfill_worker_done",
                    table=str(self.bf.table),
                    worker=self.range.worker,
                    rows_walked=self.walked,
                    batches=self.batches,
                    seconds=round(time.monotonic() - self.started, 2),
                )
                return
            self.range.last = batch.upper
            self.walked += batch.walked
            self.batches += 1
            self.shared.batch_ms.append(batch.ms)
            self.sizer.after(batch.walked, batch.ms)
            self._reread(conn, batch)
            if pause_s and not self.shared.sleep(pause_s):
                return

    def _batch(self, conn: psycopg.Connection[Any]) -> Batch | None:
        """One batch and its checkpoint in one transaction; None when the range is walked."""
        while True:
            size = self.sizer.size
            try:
                return self._attempts(conn, size)
            except DATA_ERRORS:
                if self.key.ctid:
                    raise
                return self._isolate(conn, size)
            except errors.QueryCanceled:
                if not self.sizer.halve():
                    raise StepFailed(
                        f"{self.bf.label}: a batch of {size} rows hit its statement timeout"
                        f" ({self.sizer.statement_timeout_ms}ms) even at the smallest size"
                    ) from None
                self.bf.log.warning(
                    "batch_timeout_shrink",
                    worker=self.range.worker,
                    batch_size=self.sizer.size,
                    statement_timeout_ms=self.sizer.statement_timeout_ms,
                )

    def _attempts(self, conn: psycopg.Connection[Any], size: int) -> Batch | None:
        for attempt in retrying(self.settings, self._before_retry):
            with attempt:
                n = attempt.retry_state.attempt_number
                t0 = time.monotonic()
                with conn.transaction():
                    self._open(conn, batch_lock_timeout_ms(self.settings, n))
                    # A retry follows a lock timeout or a deadlock, most often on an
                    # application's row lock: it locks only the rows no one else holds.
                    batch = (
                        self._ctid_batch(conn, size, skip_locked=n > 1)
                        if self.key.ctid
                        else self._key_batch(conn, size, skip_locked=n > 1)
                    )
                    if batch is not None:
                        self._checkpoint(conn, batch, size)
                    xid = self._xid(conn) if batch is not None and batch.updated else None
                if batch is not None:
                    batch.ms = (time.monotonic() - t0) * 1000
                if xid is not None:
                    self.bf.written.append(xid)
                return batch
        raise AssertionError("unreachable")

    def _isolate(self, conn: psycopg.Connection[Any], size: int) -> Batch | None:
        """The batch once more, after it failed on some rows' data: its key range is halved
        until the failing rows are alone (a savepoint each), they are recorded in
        `mapping_errors` and passed over, the others committed with the checkpoint as usual.
        Only a failing batch pays for this."""
        for attempt in retrying(self.settings, self._before_retry):
            with attempt:
                n = attempt.retry_state.attempt_number
                bad: list[tuple[list[str], psycopg.Error]] = []
                with conn.transaction():
                    self._open(conn, lock_timeout_ms(self.settings, n))
                    batch = self._next_range(conn, size)
                    if batch is None:
                        return None
                    batch.updated = self._bisect(conn, batch.lower, batch.upper, batch.walked, bad)
                    if len(bad) == batch.walked > 1:
                        # Every row fails: the expression is wrong, not the data.
                        raise StepFailed(f"{self.bf.label}: {_pg_error(bad[0][1])}")
                    for key, error in bad:
                        self.bf.store.record_mapping_error(
                            conn,
                            self.bf.plan,
                            self.bf.table_name,
                            dict(zip(self.key.columns, key, strict=True)),
                            error,
                            "backfill",
                        )
                    self.bf.log.warning(
                        "backfill_bad_rows",
                        worker=self.range.worker,
                        keys=[k for k, _ in bad],
                        error=_pg_error(bad[0][1]) if bad else None,
                    )
                    self._checkpoint(conn, batch, size)
                return batch
        raise AssertionError("unreachable")

    def _bisect(
        self,
        conn: psycopg.Connection[Any],
        lower: list[str] | None,
        upper: list[str],
        rows: int,
        bad: list[tuple[list[str], psycopg.Error]],
    ) -> int:
        """Rows updated in `(lower, upper]` (`rows` rows), each half in a savepoint; a single
        row that fails is added to `bad`."""
        try:
            with conn.transaction():
                cur = conn.execute(
                    batch_sql(self.bf.jobs, self.key, lower=lower is not None),
                    [*(lower or []), *upper],
                )
            return cur.rowcount
        except DATA_ERRORS as e:
            if rows <= 1:
                bad.append((upper, e))
                return 0
        row = conn.execute(
            upper_bound_sql(self.bf.table, self.key, lower=lower is not None, upper=True),
            [*(lower or []), *upper, rows // 2],
        ).fetchone()
        assert row is not None
        middle, first = [str(v) for v in row[:-1]], int(row[-1])
        return self._bisect(conn, lower, middle, first, bad) + self._bisect(
            conn, middle, upper, rows - first, bad
        )

    def _reread(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        """Reads the range of the batch before this one (see `reread_sql`): its commit, which
        does not wait for the WAL flush, is flushed by now, so its hint bits can be set. Only a
        head start for the proof: it queues for no lock longer than a batch would, and a read
        that fails is left to the proof."""
        previous, self._previous = self._previous, batch
        if previous is None or not previous.updated:
            return
        try:
            with conn.transaction():
                conn.execute(
                    timeouts_sql(lock_timeout_ms(self.settings, 1), self.sizer.statement_timeout_ms)
                )
                conn.execute(
                    reread_sql(self.bf.table, self.key, lower=bool(previous.lower)),
                    self._bounds(previous),
                )
        except psycopg.Error as e:
            self.bf.log.info(
                "backfill_reread_skipped", worker=self.range.worker, error=_pg_error(e)
            )

    def _xid(self, conn: psycopg.Connection[Any]) -> int | None:
        """The transaction id the batch's row versions carry (as `xmin`), when the proof can
        count them done by construction (see `construction_doubt`)."""
        if self.bf.doubt is not None:
            return None
        row = conn.execute("SELECT txid_current_if_assigned() % 4294967296").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def _open(self, conn: psycopg.Connection[Any], lock_timeout: int) -> None:
        """The opening SETs of a batch's transaction (`timeouts_sql`)."""
        conn.execute(timeouts_sql(lock_timeout, self.sizer.statement_timeout_ms, self.bf.jobs))

    def _checkpoint(self, conn: psycopg.Connection[Any], batch: Batch, size: int) -> None:
        """The batch's checkpoint, in its own transaction."""
        self.window.add(self.walked + batch.walked)
        self.bf.store.checkpoint(
            conn,
            self.bf.run_id,
            self.bf.ordinals,
            self.range.worker,
            last_key=batch.upper,
            walked=batch.walked,
            updated=batch.updated,
            batch_size=size,
            rate=round(self.window.rate(), 1),
        )

    def _next_range(self, conn: psycopg.Connection[Any], size: int) -> Batch | None:
        """The key range of the next batch of `size` rows (an index-only scan), nothing yet
        updated; None when the worker's range is walked."""
        last, end = self.range.last, self.range.end
        row = conn.execute(
            upper_bound_sql(self.bf.table, self.key, lower=last is not None, upper=end is not None),
            [*(last or []), *(end or []), size],
        ).fetchone()
        if row is None:
            return None
        return Batch(last, [str(v) for v in row[:-1]], int(row[-1]), 0)

    def _key_batch(
        self, conn: psycopg.Connection[Any], size: int, *, skip_locked: bool = False
    ) -> Batch | None:
        batch = self._next_range(conn, size)
        if batch is None:
            return None
        if skip_locked:
            return self._skip_locked(conn, batch)
        cur = conn.execute(
            batch_sql(self.bf.jobs, self.key, lower=batch.lower is not None), self._bounds(batch)
        )
        batch.updated = cur.rowcount
        return batch

    def _ctid_batch(
        self, conn: psycopg.Connection[Any], size: int, *, skip_locked: bool = False
    ) -> Batch | None:
        start = int(self.range.last[0]) if self.range.last else 0
        end = int(self.range.end[0]) if self.range.end else 0
        if start >= end:
            return None
        stop = min(end, start + max(1, round(size / self.bf.rows_per_page)))
        if skip_locked:
            return self._skip_locked(conn, Batch(self.range.last, [str(stop)], 0, 0))
        row = conn.execute(ctid_batch_sql(self.bf.jobs), [tid(start), tid(stop)] * 2).fetchone()
        assert row is not None
        return Batch(self.range.last, [str(stop)], int(row[0]), int(row[1]))

    def _bounds(self, batch: Batch) -> list[str]:
        """The parameters that bound a batch's range: keys, or page tids for a ctid walk."""
        if self.key.ctid:
            return [tid(int(batch.lower[0]) if batch.lower else 0), tid(int(batch.upper[0]))]
        return [*(batch.lower or []), *batch.upper]

    def _skip_locked(self, conn: psycopg.Connection[Any], batch: Batch) -> Batch:
        """Updates the rows of the batch's range that no one else holds (`skip_locked_sql`); a
        range with rows passed over is kept for `_come_back`."""
        bounds = self._bounds(batch)
        row = conn.execute(
            skip_locked_sql(self.bf.jobs, self.key, lower=batch.lower is not None),
            [*bounds, *bounds],
        ).fetchone()
        assert row is not None
        rows, locked, updated = (int(v) for v in row)
        if locked < rows:
            self.skipped.append(batch)
            self.bf.log.info(
                "batch_skipped_locked_rows",
                worker=self.range.worker,
                after=batch.lower,
                upper=batch.upper,
                rows_locked_by_others=rows - locked,
            )
        batch.walked = batch.walked or rows
        batch.updated = updated
        return batch

    def _come_back(self, conn: psycopg.Connection[Any]) -> None:
        """Walks again the ranges whose batches passed over rows that others held: the same
        way, a few times with growing pauses (an application's row lock lasts a transaction),
        then waiting for the locks under the usual lock policy, a short transaction each. The
        proof covers whatever is still left."""
        for tries in range(COME_BACK_TRIES):
            pending, self.skipped = self.skipped, []
            for batch in pending:
                self._again(conn, batch, wait=False)
            if not self.skipped or not self.shared.sleep(COME_BACK_PAUSE_S * 2**tries):
                return
        pending, self.skipped = self.skipped, []
        for batch in pending:
            self._again(conn, batch, wait=True)

    def _again(self, conn: psycopg.Connection[Any], batch: Batch, *, wait: bool) -> None:
        """One range once more, in a transaction of its own (no checkpoint: the walk is past it)."""
        for attempt in retrying(self.settings, self._before_retry):
            with attempt:
                n = attempt.retry_state.attempt_number
                with conn.transaction():
                    self._open(conn, lock_timeout_ms(self.settings, n))
                    if wait:
                        query = (
                            ctid_batch_sql(self.bf.jobs)
                            if self.key.ctid
                            else batch_sql(self.bf.jobs, self.key, lower=batch.lower is not None)
                        )
                        bounds = self._bounds(batch)
                        conn.execute(query, bounds * 2 if self.key.ctid else bounds)
                    else:
                        self._skip_locked(conn, Batch(batch.lower, batch.upper, 0, 0))
                    xid = self._xid(conn)
                if xid is not None:
                    self.bf.written.append(xid)
                return

    def _before_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.bf.log.warning(
            "batch_retry",
            worker=self.range.worker,
            attempt=state.attempt_number,
            of=self.settings.lock_retries,
            error=type(exc).__name__ if exc else None,
        )


class Backfiller:
    """One walk over a table for one backfill step, or for several merged ones (`also`)."""

    def __init__(
        self,
        executor: Executor,
        store: Store,
        run_id: int,
        ordinal: int,
        job: BackfillJob,
        control: Control,
        log: Any = None,
        *,
        dsn: str | None = None,
        also: Sequence[tuple[int, BackfillJob]] = (),
        view: str = "auto",
    ) -> None:
        self.ex = executor
        self.conn = executor.conn
        self.store = store
        self.run_id = run_id
        self.ordinals = [ordinal, *(o for o, _ in also)]
        self.jobs = [job, *(j for _, j in also)]
        self.table = job.table
        self.options = job.options
        self.label = job.label
        self.control = control
        self.dsn = dsn if dsn is not None else conninfo_of(executor.conn)
        self.view_mode = view
        self.log = log or structlog.get_logger("zdm.backfill")
        self.throttles = Throttles.of(job.table, job.options)
        self.rows_per_page = 1.0
        self.batch_ms: list[float] = []
        self.rows_walked = 0
        self.doubt: str | None = "not checked"
        """Why the proof evaluates the predicate on the rows the walk wrote (None: it need not)."""
        self.written: list[int] = []
        """The transaction ids of this process's committed batches that changed rows."""
        self._throttle: str | None = None
        self._plan: str | None = None
        self._table_name: str | None = None
        self._throttled_at = 0.0
        self._paused_run = False

    @property
    def where(self) -> str:
        """The predicate of the walk, as text (logs)."""
        return predicate(self.jobs).as_string(None)

    def run(self) -> None:
        for job in self.jobs:
            if not job.set:
                raise StepFailed(
                    f"{job.label}: nothing to set (no `set` and no dual_write on the table)"
                )
        key = find_key(self.conn, self.table)
        if key is None:
            raise StepFailed(f"{self.label}: table {self.table} does not exist")
        if key.ctid:
            why = ctid_unsupported(server_version(self.conn))
            if why:
                raise StepFailed(f"{self.label}: {self.table} {why}")
            pages = table_pages(self.conn, self.table)
            self.rows_per_page = max(1.0, estimate_rows(self.conn, self.table) / max(pages, 1))
        ranges = self._ranges(key)
        self.doubt = construction_doubt(self.conn, self.jobs)
        self.log.info(
            "backfill_start",
            table=str(self.table),
            key=list(key.columns) or ["ctid"],
            key_source=key.source,
            steps=self.ordinals,
            workers=len(ranges),
            resume_after=ranges[0].last if len(ranges) == 1 else [r.last for r in ranges],
            ranges=[
                {"worker": r.worker, "after": r.last, "end": r.end, "done": r.done} for r in ranges
            ],
            rows_done=sum(r.rows_done for r in ranges),
            rows_estimated=sum(r.rows_estimated for r in ranges),
            where=self.where,
        )
        started = time.monotonic()
        self._walk(key, ranges)
        self._bad_rows(key)
        left = self._left()
        if left:
            # Rows changed behind the walk without the trigger (or before it existed): one more pass.
            self.log.warning("backfill_second_pass", table=str(self.table), rows_left=left)
            last_end = [str(table_pages(self.conn, self.table))] if key.ctid else None
            self.store.backfill_restart(self.conn, self.run_id, self.ordinals, last_end)
            self._walk(key, self._load())
            left = self._left()
            if left:
                raise StepFailed(
                    f"{self.label}: {left} rows still match `{self.where}` after two passes"
                )
        seconds = time.monotonic() - started
        ms = sorted(self.batch_ms)
        self.log.info(
            "backfill_walked",
            table=str(self.table),
            rows_walked=self.rows_walked,
            seconds=round(seconds, 1),
            rows_per_s=round(self.rows_walked / seconds) if seconds > 0 else None,
            batches=len(ms),
            batch_ms_p50=round(percentile(ms, 50)) if ms else None,
            batch_ms_p99=round(percentile(ms, 99)) if ms else None,
            batch_ms_max=round(ms[-1]) if ms else None,
        )

    @property
    def plan(self) -> str:
        """The plan's name, which keys the rows recorded in `mapping_errors`."""
        if self._plan is None:
            self._plan = self.store.get_run(self.conn, self.run_id).plan
        return self._plan

    @property
    def table_name(self) -> str:
        """The table as `mapping_errors` names it: qualified, quoted where it must be."""
        if self._table_name is None:
            self._table_name = quoted_name(self.conn, self.table)
        return self._table_name

    def _bad_rows(self, key: Key) -> None:
        """Tries again each row a batch passed over because its mapping raised (this run's or
        an earlier one's, maybe fixed since); stops the step, resumable, naming those that
        still fail."""
        table = self.table_name
        for rec in self.store.mapping_errors(self.conn, self.plan, table=table, source="backfill"):
            if key.ctid or set(rec["row_key"]) != set(key.columns):
                continue
            with self.conn.transaction():
                self.conn.execute(timeouts_sql(lock_timeout_ms(self.ex.settings, 1), 0, self.jobs))
                self.store.forget_mapping_error(self.conn, rec["id"])
                try:
                    with self.conn.transaction():
                        self.conn.execute(
                            row_sql(self.jobs, key), [rec["row_key"][c] for c in key.columns]
                        )
                except DATA_ERRORS as e:
                    self.store.record_mapping_error(
                        self.conn, self.plan, table, rec["row_key"], e, "backfill"
                    )
        left = self.store.mapping_errors(self.conn, self.plan, table=table, source="backfill")
        if left:
            first = left[0]
            keys = ", ".join(
                _show_key(r["row_key"], key.columns) for r in left[:BAD_ROWS_SHOWN]
            ) + (", …" if len(left) > BAD_ROWS_SHOWN else "")
            raise StepFailed(
                f"{self.label}: {len(left)} row(s) of {table} cannot be mapped and were passed"
                f" over: {keys}; first error: {first['message']} (SQLSTATE {first['sqlstate']})."
                " Fix those rows (or the expression, then `zdm run --force`) and run `zdm run`"
                f" again; `zdm status` lists them ({self.store.schema}.mapping_errors)"
            )

    def _left(self) -> int:
        """Rows that still match the predicate, counted over the whole table; the row versions
        this walk's batches wrote count as done when nothing can have made them differ."""
        t0 = time.monotonic()
        doubt = self.doubt or construction_doubt(self.conn, self.jobs)
        written = self.written if doubt is None else []
        row = self.conn.execute(remaining_sql(self.jobs, written)).fetchone()
        left = int(row[0]) if row else 0
        self.log.info(
            "backfill_proof",
            table=str(self.table),
            rows_left=left,
            ms=round((time.monotonic() - t0) * 1000),
            batches_taken_as_written=len(written),
            every_row_because=doubt,
        )
        return left

    # -- ranges --------------------------------------------------------------------------------

    def _load(self) -> list[Range]:
        return [Range.of(r) for r in self.store.backfills(self.conn, self.run_id, self.ordinals[0])]

    def _ranges(self, key: Key) -> list[Range]:
        """The workers' ranges: from the checkpoints of an earlier run, else split now."""
        ranges = self._load()
        if ranges:
            if len(ranges) != self.options.workers:
                self.log.info(
                    "backfill_workers_kept", workers=len(ranges), asked=self.options.workers
                )
            return ranges
        rows = estimate_rows(self.conn, self.table)
        workers = self.options.workers
        spans: list[tuple[list[str] | None, list[str] | None, int]]
        if key.ctid:
            pages = table_pages(self.conn, self.table)
            cuts = sorted({pages * i // workers for i in range(1, workers)} - {0, pages})
            starts, ends = [0, *cuts], [*cuts, pages]
            spans = [
                (None if s == 0 else [str(s)], [str(e)], round((e - s) * self.rows_per_page))
                for s, e in zip(starts, ends, strict=True)
            ]
        else:
            bounds = split_keys(self.conn, self.table, key, workers, rows)
            lasts: list[list[str] | None] = [None, *bounds]
            ends_k: list[list[str] | None] = [*bounds, None]
            share = rows // len(lasts)
            spans = [(s, e, share) for s, e in zip(lasts, ends_k, strict=True)]
        with self.conn.transaction():
            self.store.backfill_init(self.conn, self.run_id, self.ordinals, spans)
        return self._load()

    # -- the walk ------------------------------------------------------------------------------

    def _walk(self, key: Key, ranges: list[Range]) -> None:
        shared = Shared(self.control)
        todo = [r for r in ranges if not r.done]
        if not todo:
            return
        workers = [Worker(self, key, r, shared) for r in todo]
        base_done = sum(r.rows_done for r in ranges)
        estimated = sum(r.rows_estimated for r in ranges)
        window = RateWindow()

        def snapshot() -> Snapshot:
            walked = sum(w.walked for w in workers)
            window.add(walked)
            alive = [w for w in workers if not w.finished] or workers
            return Snapshot(
                table=str(self.table),
                rows_done=base_done + walked,
                rows_estimated=estimated,
                rows_per_s=window.rate(),
                batch_size=round(sum(w.sizer.size for w in alive) / len(alive)),
                workers=len(alive),
                batches=sum(w.batches for w in workers),
                throttle=self._throttle,
            )

        failure: BaseException | None = None
        # The throttles hold from the first batch on: check them before any worker starts.
        try:
            self._check_throttles(shared)
        except BaseException as e:
            failure = e
            shared.abort.set()
        view: View = make_view(snapshot(), self.log, self.view_mode)
        if failure is None:
            for w in workers:
                w.start()
        try:
            if failure is None:
                self._supervise(workers, shared, view, snapshot)
        except BaseException as e:
            failure = e
            shared.abort.set()
        finally:
            for w in workers:
                while w.is_alive():
                    w.join(0.1)
            self.batch_ms.extend(shared.batch_ms)
            self.rows_walked += sum(w.walked for w in workers)
            view.close(snapshot())
            self._release(shared)
        if failure is not None:
            raise failure
        errors_ = [w.error for w in workers if w.error is not None]
        if errors_:
            raise errors_[0]
        if not all(w.finished for w in workers):
            raise Interrupted(self.control.signal_name or "stop")

    def _supervise(self, workers: list[Worker], shared: Shared, view: View, snapshot: Any) -> None:
        poll = min(max(self.options.batch_time / 2000, 0.05), 0.25)
        while any(w.is_alive() for w in workers):
            if not shared.stopping():
                self._check_throttles(shared)
            view.update(snapshot())
            shared.wake.wait(poll)
            shared.wake.clear()

    def _check_throttles(self, shared: Shared) -> None:
        reasons = []
        if self.store.pause_requested(self.conn, self.run_id):
            reasons.append(PAUSED)
        if self.throttles.any:
            try:
                reasons += self.throttles.reasons(self.conn)
            except psycopg.Error as e:
                raise StepFailed(f"{self.label}: a throttle check failed: {_pg_error(e)}") from None
        self._set_throttle("; ".join(reasons) or None, shared)

    def _set_throttle(self, reason: str | None, shared: Shared) -> None:
        if reason == self._throttle:
            return
        before, self._throttle = self._throttle, reason
        shared.hold(reason)
        self.store.backfill_throttle(self.conn, self.run_id, self.ordinals, reason)
        now = time.monotonic()
        if reason is not None and before is None:
            self._throttled_at = now
            self.log.info("backfill_throttled", table=str(self.table), reason=reason)
        elif reason is None:
            self.log.info(
                "backfill_unthrottled",
                table=str(self.table),
                waited_s=round(now - self._throttled_at, 1),
            )
        else:
            self.log.info("backfill_throttled", table=str(self.table), reason=reason)
        paused = reason is not None and PAUSED in reason
        if paused != self._paused_run:
            self._pause_run(paused)

    def _pause_run(self, paused: bool) -> None:
        """The run shows `paused` while `zdm pause` holds the walk, `running` again after."""
        run = self.store.get_run(self.conn, self.run_id)
        if paused:
            self.store.transition(self.conn, run, "paused", waiting_for="zdm pause")
            self.log.info("backfill_paused", table=str(self.table))
        else:
            self.store.transition(self.conn, run, "running")
            self.log.info("backfill_resumed", table=str(self.table))
        self._paused_run = paused

    def _release(self, shared: Shared) -> None:
        """Leaves no throttle shown and the run `running`, however the walk ended."""
        try:
            self._set_throttle(None, shared)
        except psycopg.Error as e:
            self.log.warning("backfill_release_failed", error=_pg_error(e))


# -- several backfills of one table in one walk -----------------------------------------------


def backfill_followers(
    steps: Sequence[PlanStep], statuses: Sequence[str], ordinal: int, ctx: Context
) -> list[tuple[int, BackfillJob]]:
    """The backfill steps right after `ordinal` that its walk can do in the same pass.

    They must be in the same phase, on the same table, not done yet, and independent of the
    earlier ones (see `merge_conflict`); the first that is not ends the group.
    """
    lead = steps[ordinal]
    walk = _job_of(lead, ctx)
    if walk is None:
        return []
    jobs = [walk]
    found: list[tuple[int, BackfillJob]] = []
    for o in range(ordinal + 1, len(steps)):
        step = steps[o]
        if step.phase != lead.phase or statuses[o] == "done":
            break
        job = _job_of(step, ctx)
        if job is None:
            break
        why = merge_conflict(jobs, job)
        if why is not None:
            if job.table == walk.table:
                structlog.get_logger("zdm.backfill").info(
                    "backfill_not_merged", step=step.key, table=str(job.table), reason=why
                )
            break
        jobs.append(job)
        found.append((o, job))
    return found


def _job_of(step: PlanStep, ctx: Context) -> BackfillJob | None:
    if step.kind != "backfill":
        return None
    actions = plan_step(step.spec, ctx)
    jobs = [a for a in actions if isinstance(a, BackfillJob)]
    return jobs[0] if len(jobs) == 1 and len(actions) == 1 else None


# -- what --dry-run prints ---------------------------------------------------------------------


def walk_lines(
    jobs: Sequence[BackfillJob],
    conn: psycopg.Connection[Any] | None,
    settings: Settings,
    *,
    state_schema: str = "zdm",
    exists: bool = True,
) -> list[str]:
    """The statements of a walk as the workers run them, with the facts around them."""
    job = jobs[0]
    opts = job.options
    key = find_key(conn, job.table) if conn is not None and exists else None
    shown = key or Key(("<primary key>",))
    sizer = BatchSizer.of(opts)
    sizing = (
        f"batches sized to {opts.batch_time}ms (start {sizer.size}, {opts.min_batch}.."
        f"{opts.max_batch} rows; a batch over {sizer.statement_timeout_ms}ms is cancelled,"
        " halved and retried)"
        if sizer.auto
        else f"batches of {sizer.size} rows"
    )
    lines = [f"-- backfill of {job.table} by {shown.describe()}, {sizing}"]
    if len(jobs) > 1:
        lines.append(f"-- {len(jobs)} backfill steps of {job.table} in one pass over the table")
    if opts.workers > 1:
        lines.append(
            f"-- {opts.workers} workers, each on its own connection and checkpoint row, walk"
            " disjoint key ranges split at keys sampled from the table"
        )
    if conn is not None and not exists:
        lines.append(f"-- {job.table} does not exist yet: no estimate")
    elif conn is not None:
        rows = estimate_rows(conn, job.table)
        batches = -(-rows // sizer.size) if sizer.size else 0
        lines.append(f"-- about {rows:,} rows; about {batches:,} batches at {sizer.size} rows")
        if key is not None and key.ctid:
            why = ctid_unsupported(server_version(conn))
            lines.append(
                f"-- ERROR: {job.table} {why}"
                if why
                else "-- no primary key or unique NOT NULL index: walked by ctid page ranges"
            )
    lines += [f"-- {t}" for t in throttle_lines(opts)]
    if skipped_triggers(jobs):
        lines.append(
            "-- the plan's dual-write trigger would change nothing a batch writes: its WHEN clause"
            " passes the batches over (zdm.skip_triggers); every other write fires it"
        )
    lines.append("-- ROW EXCLUSIVE and row locks only (blocks no reads or writes); each batch:")
    lines.append("BEGIN;")
    lines.append(
        timeouts_sql(
            batch_lock_timeout_ms(settings, 1), sizer.statement_timeout_ms, jobs
        ).as_string(conn)
        + ";"
    )
    if shown.ctid:
        lines.append(ctid_batch_sql(jobs).as_string(conn) + ";")
    else:
        lines.append(
            upper_bound_sql(job.table, shown, lower=True, upper=opts.workers > 1).as_string(conn)
            + ";"
        )
        lines.append(batch_sql(jobs, shown, lower=True).as_string(conn) + ";")
    lines.append(
        f"-- checkpoint: UPDATE {state_schema}.backfills SET last_key = <upper>,"
        " rows_done = rows_done + <rows>, … WHERE <this step and worker>;"
    )
    lines.append("COMMIT;")
    lines.append(
        f"-- a batch that meets a lock (held over {batch_lock_timeout_ms(settings, 1)}ms) is"
        " retried taking only the rows no one holds, and the walk comes back to the others:"
    )
    lines.append(skip_locked_sql(jobs, shown, lower=True).as_string(conn) + ";")
    lines.append("-- when the walk is over, proof that no row is left:")
    lines.append(remaining_sql(jobs).as_string(conn) + ";")
    if conn is not None and exists and construction_doubt(conn, jobs, probe=False) is None:
        lines.append(
            "-- a row version a batch wrote (its xmin is the batch's transaction) holds what the"
            " batch computed from that same row, and nothing else acts on the batches: it counts"
            " as done, and the predicate is evaluated on every other row (if the expressions are"
            " immutable, which the run checks first):"
        )
        lines.append(
            remaining_sql(jobs, [0]).as_string(conn).replace("'{0}'", "'{<batch xids>}'") + ";"
        )
    return lines


def throttle_lines(options: Any) -> list[str]:
    """The throttles of a backfill step, in words."""
    found = []
    if options.pause:
        found.append(f"pause {options.pause}ms between batches")
    if options.max_replica_lag is not None:
        found.append(f"waits while a standby's replay lags over {options.max_replica_lag}ms")
    if options.throttle_query:
        found.append(f"waits while the throttle_query returns true: {options.throttle_query}")
    if options.pause_on_autovacuum:
        found.append("waits while a vacuum works on the table")
    found.append("`zdm pause` holds it after the current batch; SIGINT/SIGTERM stop it there")
    return found


# -- helpers -----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(pct / 100 * len(sorted_values))))
    return float(sorted_values[rank - 1])


def conninfo_of(conn: psycopg.Connection[Any]) -> str:
    """A connection string for more sessions like `conn` (workers), password included."""
    params = {
        o.keyword.decode(): o.val.decode()
        for o in conn.pgconn.info
        if o.val is not None and o.val != b""
    }
    return make_conninfo(**params)


__all__ = [
    "CONTENTION",
    "INITIAL_AUTO_BATCH",
    "Backfiller",
    "BatchSizer",
    "Control",
    "Interrupted",
    "Key",
    "backfill_followers",
    "batch_sql",
    "default_where",
    "estimate_rows",
    "percentile",
    "primary_key",
    "remaining_sql",
    "upper_bound_sql",
]


def _show_key(row_key: dict[str, Any], columns: Sequence[str]) -> str:
    """`id=17`, `(a=1, b=x)`: a recorded row's key as messages show it, in the key's order."""
    order = [c for c in columns if c in row_key] + [c for c in row_key if c not in columns]
    parts = [f"{c}={row_key[c]}" for c in order]
    return parts[0] if len(parts) == 1 else f"({', '.join(parts)})"
