"""A worker walks one key range on its own connection, batch after batch: each batch commits
with its checkpoint, a batch that meets a lock is retried on the rows no one holds, a batch that
fails on some rows' data passes those rows over and records them."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import tenacity
from psycopg import errors

from zdm.engine.backfill.gate import Gate
from zdm.engine.backfill.key import Key, tid
from zdm.engine.backfill.ranges import Batch, Range
from zdm.engine.backfill.sizing import BatchSizer, batch_lock_timeout_ms
from zdm.engine.backfill.statements import (
    batch_sql,
    ctid_batch_sql,
    reread_sql,
    skip_locked_sql,
    timeouts_sql,
    upper_bound_sql,
)
from zdm.engine.policy import (
    StepFailed,
    failure,
    lock_timeout_ms,
    log_retry,
    pg_error,
    retrying,
)
from zdm.engine.progress import RateWindow
from zdm.engine.session import ConnectionFailed, ConnectionLost, connect
from zdm.plan import Settings

if TYPE_CHECKING:
    from zdm.engine.backfill.walk import Backfiller


# Rows a batch passed over because others held them: walked again this many times, pausing
# 50 ms, 100 ms, … between rounds, before the last round waits for their locks.
COME_BACK_TRIES = 5
COME_BACK_PAUSE_S = 0.05


# A batch failing on these is failing on some of its rows' data (class 22: a bad cast, a value
# too long, an invalid regular expression; class 23: a constraint): they are looked for.
DATA_ERRORS = (errors.DataError, errors.IntegrityError)


class Worker(threading.Thread):
    """Walks one range on its own connection, batch after batch, until its end or a stop."""

    def __init__(self, bf: Backfiller, key: Key, rng: Range, gate: Gate) -> None:
        super().__init__(daemon=True, name=f"zdm-backfill-{rng.worker}")
        self.bf = bf
        self.key = key
        self.range = rng
        self.gate = gate
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
        except psycopg.Error as e:
            self.error = failure(f"{self.bf.label}: worker {self.range.worker}", e, self.settings)
        except ConnectionFailed as e:
            self.error = ConnectionLost(f"{self.bf.label}: {e}")
        except BaseException as e:
            self.error = e
        finally:
            if self.error is not None:
                self.gate.abort.set()
            self.gate.wake.set()

    def _loop(self, conn: psycopg.Connection[Any]) -> None:
        pause_s = self.bf.options.pause / 1000
        while True:
            if not self.gate.pass_gate():
                return
            batch = self._batch(conn)
            if batch is None:
                self._come_back(conn)
                if self.gate.stopping():
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
            self.gate.batch_ms.append(batch.ms)
            self.sizer.after(batch.walked, batch.ms)
            self._reread(conn, batch)
            if pause_s and not self.gate.sleep(pause_s):
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
                        raise StepFailed(f"{self.bf.label}: {pg_error(bad[0][1])}")
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
                        error=pg_error(bad[0][1]) if bad else None,
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
            self.bf.log.info("backfill_reread_skipped", worker=self.range.worker, error=pg_error(e))

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
            if not self.skipped or not self.gate.sleep(COME_BACK_PAUSE_S * 2**tries):
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
        log_retry(self.bf.log, "batch_retry", state, self.settings, worker=self.range.worker)
