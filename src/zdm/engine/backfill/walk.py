"""The backfill walk: key ranges, one per worker, each on its own connection, batches committed
with their checkpoints, resumable after a kill.

A walk splits its table's key space into one range per worker; each worker walks its range in
batches (`worker.py`), each committed together with that worker's checkpoint row, so a kill
loses at most the batch in flight and a resume continues every worker after its last committed
key. The main thread supervises: it checks throttles and `zdm pause` between batches (workers
wait at a gate while one holds), watches for SIGINT or SIGTERM (workers stop after their
current batch), and shows progress. At the end the proof counts the rows still left.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import make_conninfo

from zdm.ddl import BackfillJob
from zdm.engine.backfill.bad_rows import retry_bad_rows
from zdm.engine.backfill.catalog import (
    construction_doubt,
    ctid_unsupported,
    estimate_rows,
    find_key,
    quoted_name,
    split_keys,
    table_pages,
)
from zdm.engine.backfill.gate import Gate, OnPause
from zdm.engine.backfill.key import Key
from zdm.engine.backfill.mapping import predicate, remaining_sql
from zdm.engine.backfill.ranges import Range
from zdm.engine.backfill.signals import Control, Interrupted
from zdm.engine.backfill.worker import Worker
from zdm.engine.executor import Executor
from zdm.engine.policy import StepFailed, pg_error
from zdm.engine.progress import RateWindow, Snapshot, View, make_view
from zdm.engine.session import server_version
from zdm.engine.throttle import Throttles
from zdm.state import Store
from zdm.stats import percentile

PAUSED = "paused by `zdm pause`"


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
        on_pause: OnPause,
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
        self.on_pause = on_pause
        """The runner's: moves the run's status while `zdm pause` holds the walk (True) and
        after (False). The walk never moves the run's status itself."""
        self.log = log or structlog.get_logger("zdm.backfill")
        self.throttles = Throttles.of(job.table, job.options)
        self.backfills = store.t("backfills")
        """The state table of the workers' checkpoints."""
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
        retry_bad_rows(self, key)
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
        gate = Gate(self.control)
        todo = [r for r in ranges if not r.done]
        if not todo:
            return
        workers = [Worker(self, key, r, gate) for r in todo]
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
            self._check_throttles(gate)
        except BaseException as e:
            failure = e
            gate.abort.set()
        view: View = make_view(snapshot(), self.log, self.view_mode)
        if failure is None:
            for w in workers:
                w.start()
        try:
            if failure is None:
                self._supervise(workers, gate, view, snapshot)
        except BaseException as e:
            failure = e
            gate.abort.set()
        finally:
            for w in workers:
                while w.is_alive():
                    w.join(0.1)
            self.batch_ms.extend(gate.batch_ms)
            self.rows_walked += sum(w.walked for w in workers)
            view.close(snapshot())
            self._release(gate)
        if failure is not None:
            raise failure
        errors_ = [w.error for w in workers if w.error is not None]
        if errors_:
            raise errors_[0]
        if not all(w.finished for w in workers):
            raise Interrupted(self.control.signal_name or "stop")

    def _supervise(self, workers: list[Worker], gate: Gate, view: View, snapshot: Any) -> None:
        poll = min(max(self.options.batch_time / 2000, 0.05), 0.25)
        while any(w.is_alive() for w in workers):
            if not gate.stopping():
                self._check_throttles(gate)
            view.update(snapshot())
            gate.wake.wait(poll)
            gate.wake.clear()

    def _check_throttles(self, gate: Gate) -> None:
        reasons = []
        if self.store.pause_requested(self.conn, self.run_id):
            reasons.append(PAUSED)
        if self.throttles.any:
            try:
                reasons += self.throttles.reasons(self.conn)
            except psycopg.Error as e:
                raise StepFailed(f"{self.label}: a throttle check failed: {pg_error(e)}") from None
        self._set_throttle("; ".join(reasons) or None, gate)

    def _set_throttle(self, reason: str | None, gate: Gate) -> None:
        if reason == self._throttle:
            return
        before, self._throttle = self._throttle, reason
        gate.hold(reason)
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
        """The run shows `paused` while `zdm pause` holds the walk, `running` again after: the
        walk says so (`on_pause`), its owner moves the run."""
        self.on_pause(paused)
        self.log.info("backfill_paused" if paused else "backfill_resumed", table=str(self.table))
        self._paused_run = paused

    def _release(self, gate: Gate) -> None:
        """Leaves no throttle shown and the run `running`, however the walk ended."""
        try:
            self._set_throttle(None, gate)
        except psycopg.Error as e:
            self.log.warning("backfill_release_failed", error=pg_error(e))


def conninfo_of(conn: psycopg.Connection[Any]) -> str:
    """A connection string for more sessions like `conn` (workers), password included."""
    params = {
        o.keyword.decode(): o.val.decode()
        for o in conn.pgconn.info
        if o.val is not None and o.val != b""
    }
    return make_conninfo(**params)
