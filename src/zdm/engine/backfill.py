"""The backfill loop: key-range batches, each committed with its checkpoint, resumable after a kill.

Every batch is bounded by a key range (`key > last AND key <= upper`), the upper bound found by an
index-only scan, so each UPDATE is an index range scan. (An UPDATE joined to a LIMIT subquery of
keys is planned as a hash join over the whole table and the backfill turns quadratic.)
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg import errors, sql

from zdm.ddl import BackfillJob, Table, user_sql
from zdm.engine.executor import Executor, StepFailed, _pg_error
from zdm.engine.retry import CONTENTION, lock_timeout_ms, retrying
from zdm.state import Store

INITIAL_AUTO_BATCH = 1000
GROWTH = 1.5
PROGRESS_EVERY_S = 5.0


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived: the current batch committed and the run stops, resumable."""


@dataclass
class Control:
    """Stop requests from signals, checked between batches."""

    stop: threading.Event = field(default_factory=threading.Event)
    signal_name: str | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: Any) -> None:
            self.signal_name = signal.Signals(signum).name
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


@dataclass(frozen=True)
class Key:
    """The columns a backfill walks, in index order."""

    columns: tuple[str, ...]

    def idents(self) -> sql.Composed:
        return sql.SQL(", ").join(map(sql.Identifier, self.columns))

    def row(self) -> sql.Composed:
        return sql.SQL("({})").format(self.idents())

    def params(self) -> sql.Composed:
        return sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(self.columns)))


def primary_key(conn: psycopg.Connection[Any], table: Table) -> Key | None:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i"
        " JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) ON true"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY k.n",
        [table.ident().as_string(conn)],
    ).fetchall()
    return Key(tuple(r[0] for r in rows)) if rows else None


def default_where(mapping: dict[str, str]) -> str:
    """Rows where some mapped column differs from its expression (rows the trigger fixed are not)."""
    return " OR ".join(
        f"{sql.Identifier(c).as_string(None)} IS DISTINCT FROM ({e})" for c, e in mapping.items()
    )


def upper_bound_sql(table: Table, key: Key, first: bool) -> sql.Composed:
    """The last key of the next batch and the batch's row count: an index-only scan."""
    lower = sql.SQL("") if first else sql.SQL(" WHERE {} > {}").format(key.row(), key.params())
    # Qualified: a bare name in ORDER BY would mean the ::text output column and sort as text.
    desc = sql.SQL(", ").join(
        sql.SQL("{} DESC").format(sql.Identifier("s", c)) for c in key.columns
    )
    return sql.SQL(
        "SELECT {texts}, count(*) OVER () FROM (SELECT {cols} FROM {t}{lower} ORDER BY {cols} LIMIT %s) s"
        " ORDER BY {desc} LIMIT 1"
    ).format(
        texts=sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier("s", c)) for c in key.columns
        ),
        cols=key.idents(),
        t=table.ident(),
        lower=lower,
        desc=desc,
    )


def batch_sql(job: BackfillJob, key: Key, where: str, first: bool) -> sql.Composed:
    """The UPDATE of one batch: a key range, the predicate, the mapping."""
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = ({})").format(sql.Identifier(c), user_sql(e)) for c, e in job.set.items()
    )
    lower = sql.SQL("") if first else sql.SQL("{} > {} AND ").format(key.row(), key.params())
    return sql.SQL("UPDATE {t} SET {a} WHERE {lower}{k} <= {p} AND ({w})").format(
        t=job.table.ident(),
        a=assignments,
        lower=lower,
        k=key.row(),
        p=key.params(),
        w=user_sql(where),
    )


def remaining_sql(job: BackfillJob, where: str) -> sql.Composed:
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {})").format(
        job.table.ident(), user_sql(where)
    )


def estimate_rows(conn: psycopg.Connection[Any], table: Table) -> int:
    row = conn.execute(
        "SELECT CASE WHEN reltuples < 0 THEN NULL ELSE reltuples::bigint END FROM pg_class"
        " WHERE oid = to_regclass(%s)",
        [table.ident().as_string(conn)],
    ).fetchone()
    if row and row[0] is not None:
        return int(row[0])
    counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident())).fetchone()
    return int(counted[0]) if counted else 0


@dataclass
class BatchSizer:
    """Sizes batches to a target duration: grow at most 1.5x, shrink in proportion when slow."""

    size: int
    auto: bool
    target_ms: float
    minimum: int
    maximum: int

    def after(self, rows: int, ms: float) -> None:
        if not self.auto or rows < self.size:
            return
        factor = min(GROWTH, self.target_ms / max(ms, 1.0))
        self.size = max(self.minimum, min(self.maximum, int(self.size * factor)))

    def halve(self) -> None:
        self.size = max(self.minimum, self.size // 2)

    @property
    def statement_timeout_ms(self) -> int:
        """An auto batch that runs 10x over target is cancelled, halved and retried."""
        return int(max(self.target_ms * 10, 1000)) if self.auto else 0


class Backfiller:
    def __init__(
        self,
        executor: Executor,
        store: Store,
        run_id: int,
        ordinal: int,
        job: BackfillJob,
        control: Control,
        log: Any = None,
    ) -> None:
        self.ex = executor
        self.conn = executor.conn
        self.store = store
        self.run_id = run_id
        self.ordinal = ordinal
        self.job = job
        self.control = control
        self.log = log or structlog.get_logger("zdm.backfill")
        opts = job.options
        auto = opts.batch_size == "auto"
        self.sizer = BatchSizer(
            size=max(opts.min_batch, min(opts.max_batch, INITIAL_AUTO_BATCH))
            if auto
            else int(opts.batch_size),
            auto=auto,
            target_ms=opts.batch_time,
            minimum=opts.min_batch,
            maximum=opts.max_batch,
        )
        self.where = job.where or default_where(job.set)

    def run(self) -> None:
        if not self.job.set:
            raise StepFailed(
                f"{self.job.label}: nothing to set (no `set` and no dual_write on the table)"
            )
        key = primary_key(self.conn, self.job.table)
        if key is None:
            raise StepFailed(f"{self.job.label}: {self.job.table} has no primary key to walk")
        state = self.store.backfill(self.conn, self.run_id, self.ordinal)
        if state is None:
            self.store.backfill_start(
                self.conn,
                self.run_id,
                self.ordinal,
                0,
                rows_estimated=estimate_rows(self.conn, self.job.table),
            )
            state = self.store.backfill(self.conn, self.run_id, self.ordinal)
            assert state is not None
        if state.batch_size and self.sizer.auto:
            self.sizer.size = state.batch_size
        self.log.info(
            "backfill_start",
            table=str(self.job.table),
            key=list(key.columns),
            resume_after=state.last_key,
            rows_done=state.rows_done,
            rows_estimated=state.rows_estimated,
            where=self.where,
        )
        self._walk(key, state.last_key, state.rows_done, state.rows_estimated or 0)
        if self.ex.probe(remaining_sql(self.job, self.where)):
            # Rows changed behind the walk without the trigger (or before it existed): one more pass.
            self.log.warning("backfill_second_pass", table=str(self.job.table))
            self.store.backfill_state(self.conn, self.run_id, self.ordinal, 0, reset=True)
            self._walk(key, None, 0, 0)
            if self.ex.probe(remaining_sql(self.job, self.where)):
                raise StepFailed(
                    f"{self.job.label}: rows still match `{self.where}` after two passes"
                )

    def _walk(self, key: Key, last: Sequence[str] | None, done: int, estimated: int) -> None:
        started = time.monotonic()
        walked_here = 0
        last_progress = started
        while True:
            self._between_batches()
            first = last is None
            t0 = time.monotonic()
            batch = self._batch(key, last)
            if batch is None:
                break
            upper, walked, updated = batch
            ms = (time.monotonic() - t0) * 1000
            last = upper
            done += walked
            walked_here += walked
            self.sizer.after(walked, ms)
            now = time.monotonic()
            rate = walked_here / max(now - started, 1e-6)
            if now - last_progress >= PROGRESS_EVERY_S or first:
                last_progress = now
                eta = (estimated - done) / rate if rate > 0 and estimated > done else 0
                self.log.info(
                    "backfill_progress",
                    table=str(self.job.table),
                    rows_done=done,
                    rows_estimated=estimated,
                    rows_per_s=round(rate),
                    eta_s=round(eta),
                    batch_size=self.sizer.size,
                    batch_ms=round(ms),
                )
            del updated
        self.log.info(
            "backfill_walked",
            table=str(self.job.table),
            rows_done=done,
            seconds=round(time.monotonic() - started, 1),
        )

    def _batch(self, key: Key, last: Sequence[str] | None) -> tuple[list[str], int, int] | None:
        """One batch and its checkpoint in one transaction; None when the walk is over."""
        first = last is None
        params_last = list(last) if last is not None else []
        while True:
            size = self.sizer.size
            try:
                return self._batch_attempts(key, first, params_last, size)
            except errors.QueryCanceled:
                if not self.sizer.auto or self.sizer.size <= self.sizer.minimum:
                    raise StepFailed(
                        f"{self.job.label}: a batch of {size} rows hit the statement timeout"
                    ) from None
                self.sizer.halve()
                self.log.warning("batch_timeout_shrink", batch_size=self.sizer.size)

    def _batch_attempts(
        self, key: Key, first: bool, last: list[str], size: int
    ) -> tuple[list[str], int, int] | None:
        settings = self.ex.settings
        for attempt in retrying(settings, self._before_retry):
            with attempt:
                n = attempt.retry_state.attempt_number
                t0 = time.monotonic()
                with self.conn.transaction():
                    self.conn.execute(
                        sql.SQL(
                            "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}"
                        ).format(
                            sql.Literal(f"{lock_timeout_ms(settings, n)}ms"),
                            sql.Literal(f"{self.sizer.statement_timeout_ms}ms"),
                        )
                    )
                    row = self.conn.execute(
                        upper_bound_sql(self.job.table, key, first), [*last, size]
                    ).fetchone()
                    if row is None:
                        return None
                    upper = [str(v) for v in row[:-1]]
                    walked = int(row[-1])
                    cur = self.conn.execute(
                        batch_sql(self.job, key, self.where, first), [*last, *upper]
                    )
                    updated = cur.rowcount
                    ms = (time.monotonic() - t0) * 1000
                    self.store.checkpoint(
                        self.conn,
                        self.run_id,
                        self.ordinal,
                        0,
                        last_key=upper,
                        walked=walked,
                        updated=updated,
                        batch_size=size,
                        rate=walked / max(ms / 1000, 1e-6),
                    )
                return upper, walked, updated
        raise AssertionError("unreachable")

    def _before_retry(self, state: Any) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.log.warning("batch_retry", attempt=state.attempt_number, error=type(exc).__name__)

    def _between_batches(self) -> None:
        if self.control.stop.is_set():
            raise Interrupted(self.control.signal_name or "stop")
        pause = self.job.options.pause
        if pause:
            time.sleep(pause / 1000)
        if self.ex.monitor is not None and self.store.pause_requested(self.ex.monitor, self.run_id):
            self.log.info("backfill_paused", table=str(self.job.table))
            self.store.backfill_state(
                self.conn, self.run_id, self.ordinal, 0, throttle="paused by zdm pause"
            )
            while self.store.pause_requested(self.ex.monitor, self.run_id):
                if self.control.stop.is_set():
                    raise Interrupted(self.control.signal_name or "stop")
                time.sleep(0.2)
            self.store.backfill_state(self.conn, self.run_id, self.ordinal, 0, throttle=None)
            self.log.info("backfill_resumed", table=str(self.job.table))


__all__ = ["CONTENTION", "Backfiller", "Control", "Interrupted", "_pg_error"]
