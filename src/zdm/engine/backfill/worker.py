"""A worker walks one key range on its own connection, batch after batch: each batch commits
with its checkpoint, a batch that meets a lock is retried on the rows no one holds, a batch that
fails on some rows' data passes those rows over and records them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
import tenacity
from psycopg import errors, sql

from zdm.engine.backfill.bad_rows import DATA_ERRORS, isolate
from zdm.engine.backfill.gate import Gate
from zdm.engine.backfill.key import Key, tid
from zdm.engine.backfill.ranges import Batch, Range
from zdm.engine.backfill.sizing import BatchSizer, batch_lock_timeout_ms
from zdm.engine.backfill.statements import (
    as_lines,
    batch_sql,
    batch_transaction,
    checkpoint_sql,
    ctid_batch_sql,
    reread_transaction,
    skip_locked_sql,
    timeouts_sql,
    upper_bound_sql,
)
from zdm.engine.policy import StepFailed, failure, log_retry, pg_error
from zdm.engine.progress import RateWindow
from zdm.engine.retry import lock_timeout_ms, retrying
from zdm.engine.session import ConnectionFailed, ConnectionLost, connect, one_round_trip
from zdm.plan import Settings

if TYPE_CHECKING:
    from zdm.engine.backfill.walk import Backfiller


# Rows a batch passed over because others held them: walked again this many times, pausing
# 50 ms, 100 ms, … between rounds, before the last round waits for their locks.
COME_BACK_TRIES = 5
COME_BACK_PAUSE_S = 0.05


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
        self._statements: dict[tuple[str, bool], tuple[list[bytes], list[str]]] = {}
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
                return isolate(self, conn, size)
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
        for attempt in retrying(self.settings, self.before_retry):
            with attempt:
                n = attempt.retry_state.attempt_number
                t0 = time.monotonic()
                if n == 1 and not self.key.ctid:
                    batch, xid = self._at_once(conn, size)
                else:
                    batch, xid = self._in_steps(conn, size, n)
                if batch is not None:
                    batch.ms = (time.monotonic() - t0) * 1000
                if xid is not None and self.bf.doubt is None:
                    self.bf.written.append(xid)
                return batch
        raise AssertionError("unreachable")

    def _at_once(self, conn: psycopg.Connection[Any], size: int) -> tuple[Batch | None, int | None]:
        """A key walk's batch in one statement (`batch_and_checkpoint_sql`: its range, its UPDATE, its
        checkpoint), sent with its transaction's BEGIN, SETs and COMMIT: one round trip."""
        last, end = self.range.last, self.range.end
        self.window.add(self.walked)
        statements = self._cached(
            conn,
            ("batch", last is not None),
            lambda: batch_transaction(
                self.bf.jobs,
                self.key,
                self.bf.backfills,
                batch_lock_timeout_ms(self.settings, 1),
                self.sizer.statement_timeout_ms,
                lower=last is not None,
                upper=end is not None,
            ),
        )
        row = one_round_trip(
            conn,
            statements,
            [
                *(last or []),
                *(end or []),
                size,
                *(last or []),
                *self._checkpoint_params(size),
            ],
        )
        if row is None:
            return None, None
        *upper, walked, updated, xid = row
        batch = Batch(last, [str(v) for v in upper], int(walked), int(updated))
        return batch, int(xid) if batch.updated else None

    def _in_steps(
        self, conn: psycopg.Connection[Any], size: int, attempt: int
    ) -> tuple[Batch | None, int | None]:
        """A ctid walk's batch, or a key walk's retry, which locks only the rows no one else
        holds (it follows a lock timeout or a deadlock, most often on an application's row
        lock): statement by statement in one transaction."""
        with conn.transaction():
            self.open_batch(conn, batch_lock_timeout_ms(self.settings, attempt))
            batch = (
                self._ctid_batch(conn, size, skip_locked=attempt > 1)
                if self.key.ctid
                else self._key_batch_skip_locked(conn, size)
            )
            if batch is not None:
                self.checkpoint(conn, batch, size)
            xid = self._xid(conn) if batch is not None and batch.updated else None
        return batch, xid

    def _cached(
        self,
        conn: psycopg.Connection[Any],
        shape: tuple[str, bool],
        build: Callable[[], list[sql.Composable]],
    ) -> list[bytes]:
        """The statements of a transaction of this shape, composed once per walk; each batch's
        are logged at debug level (`batch_sql`), as the dry-run prints them."""
        found = self._statements.get(shape)
        if found is None:
            built = build()
            found = self._statements[shape] = (
                [q.as_bytes(conn) for q in built],
                as_lines(built, conn),
            )
        self.bf.log.debug("batch_sql", kind=shape[0], worker=self.range.worker, sql=found[1])
        return found[0]

    def _reread(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        """Reads the range of the batch before this one (see `reread_sql`): its commit, which
        does not wait for the WAL flush, is flushed by now, so its hint bits can be set. Only a
        head start for the proof: it queues for no lock longer than a batch would, and a read
        that fails is left to the proof."""
        previous, self._previous = self._previous, batch
        if previous is None or not previous.updated:
            return
        lower = bool(previous.lower)
        statements = self._cached(
            conn,
            ("reread", lower),
            lambda: reread_transaction(
                self.bf.table,
                self.key,
                lock_timeout_ms(self.settings, 1),
                self.sizer.statement_timeout_ms,
                lower=lower,
            ),
        )
        try:
            one_round_trip(conn, statements, self._bounds(previous))
        except psycopg.Error as e:
            self.bf.log.info("backfill_reread_skipped", worker=self.range.worker, error=pg_error(e))

    def _xid(self, conn: psycopg.Connection[Any]) -> int | None:
        """The transaction id the batch's row versions carry (as `xmin`), when the proof can
        count them done by construction (see `construction_doubt`)."""
        if self.bf.doubt is not None:
            return None
        row = conn.execute("SELECT txid_current_if_assigned() % 4294967296").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def open_batch(self, conn: psycopg.Connection[Any], lock_timeout: int) -> None:
        """The opening SETs of a batch's transaction (`timeouts_sql`)."""
        conn.execute(timeouts_sql(lock_timeout, self.sizer.statement_timeout_ms, self.bf.jobs))

    def checkpoint(self, conn: psycopg.Connection[Any], batch: Batch, size: int) -> None:
        """The batch's checkpoint, in the batch's own transaction (`checkpoint_sql`)."""
        self.window.add(self.walked + batch.walked)
        conn.execute(
            checkpoint_sql(self.bf.backfills),
            [
                json.dumps(batch.upper),
                batch.walked,
                batch.updated,
                *self._checkpoint_params(size),
            ],
        )

    def _checkpoint_params(self, size: int) -> list[Any]:
        """A checkpoint's last parameters: the batch size, the rate, and whose row it is."""
        return [
            size,
            round(self.window.rate(), 1),
            self.bf.run_id,
            self.bf.ordinals,
            self.range.worker,
            self.bf.store.part or "",
        ]

    def next_range(self, conn: psycopg.Connection[Any], size: int) -> Batch | None:
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

    def _key_batch_skip_locked(self, conn: psycopg.Connection[Any], size: int) -> Batch | None:
        """A key walk's retried batch: the next range, and only its rows no one else holds."""
        batch = self.next_range(conn, size)
        return None if batch is None else self._skip_locked(conn, batch)

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
        for attempt in retrying(self.settings, self.before_retry):
            with attempt:
                n = attempt.retry_state.attempt_number
                with conn.transaction():
                    self.open_batch(conn, lock_timeout_ms(self.settings, n))
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

    def before_retry(self, state: tenacity.RetryCallState) -> None:
        log_retry(self.bf.log, "batch_retry", state, self.settings, worker=self.range.worker)
