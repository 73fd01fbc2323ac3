"""--dry-run: the executor's statements, printed instead of run, in a read-only transaction.

With a database it also shows which units the catalog says are done, row estimates and batch
counts, and which steps a run already finished; it never creates zdm's state schema.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from zdm.ddl import BackfillJob, Check, Table, Txn
from zdm.ddl import catalog
from zdm.engine.backfill import (
    INITIAL_AUTO_BATCH,
    Key,
    batch_sql,
    default_where,
    estimate_rows,
    primary_key,
    remaining_sql,
    upper_bound_sql,
)
from zdm.engine.executor import render
from zdm.engine.retry import lock_timeout_ms
from zdm.engine.session import connect, redact, server_version
from zdm.operations import Context, plan_step
from zdm.operations.base import LATEST_SERVER_VERSION
from zdm.plan import LoadedPlan, Settings
from zdm.state import Store


def _fmt_ms(ms: int) -> str:
    if ms == 0:
        return "none"
    return f"{ms / 1000:g}s" if ms >= 1000 and ms % 100 == 0 else f"{ms}ms"


class DryRun:
    def __init__(self, loaded: LoadedPlan, dsn: str | None, *, state_schema: str = "zdm") -> None:
        self.loaded = loaded
        self.plan = loaded.plan
        self.dsn = dsn
        self.store = Store(state_schema)

    def lines(self) -> Iterator[str]:
        if self.dsn is None:
            yield from self._lines(None)
            return
        conn = connect(self.dsn, f"dry-run {self.loaded.name}", autocommit=False)
        try:
            conn.execute("SET TRANSACTION READ ONLY")
            yield from self._lines(conn)
        finally:
            conn.rollback()
            conn.close()

    def _lines(self, conn: psycopg.Connection[Any] | None) -> Iterator[str]:
        s = self.plan.settings
        version = server_version(conn) if conn is not None else LATEST_SERVER_VERSION
        yield f"-- zdm dry-run of plan {self.loaded.name} ({self.loaded.path}, sha256 {self.loaded.sha256[:12]})"
        if conn is not None:
            yield f"-- database: {redact(self.dsn or '') or 'from PG* variables'}, PostgreSQL {version // 10000}.{version % 100}"
        else:
            yield "-- no database given: nothing is checked, PostgreSQL 18 assumed (set --dsn for estimates)"
        yield (
            f"-- statements that block the application run under lock_timeout {_fmt_ms(s.lock_timeout)}"
            f" rising to {_fmt_ms(s.lock_timeout_max)}, {s.lock_retries} attempts, backoff up to"
            f" {_fmt_ms(s.retry_max_wait)}; statement_timeout {_fmt_ms(s.statement_timeout)}"
        )
        done = self._done_steps(conn)
        ctx = Context(self.plan.schema_, version, self.plan, self.loaded.base_dir)
        phase = None
        for step in self.plan.steps():
            if step.phase != phase:
                phase = step.phase
                yield ""
                if phase in self.plan.gates:
                    yield "-- ===== gate: the run stops here until `zdm run --continue` ====="
                yield f"-- ===== phase {phase} ====="
            yield ""
            yield f"-- step {step.key} {step.kind}" + (
                " — already done by this run: skipped" if step.key in done else ""
            )
            for action in plan_step(step.spec, ctx):
                yield from self._action(action, conn, s, skipped=step.key in done)

    @staticmethod
    def _exists(conn: psycopg.Connection[Any], table: Table) -> bool:
        row = conn.execute(catalog.table_exists(table)).fetchone()
        return bool(row and row[0])

    def action_lines(self, action: Any, conn: psycopg.Connection[Any] | None) -> Iterator[str]:
        return self._action(action, conn, self.plan.settings, skipped=False)

    def _done_steps(self, conn: psycopg.Connection[Any] | None) -> set[str]:
        if conn is None or not self.store.exists(conn):
            return set()
        run = self.store.unfinished_run(conn, self.loaded.name)
        if run is None:
            return set()
        return {r.key for r in self.store.steps(conn, run.id) if r.status == "done"}

    def _action(
        self, action: Any, conn: psycopg.Connection[Any] | None, s: Settings, *, skipped: bool
    ) -> Iterator[str]:
        if isinstance(action, Txn):
            yield from self._txn(action, conn, s, skipped)
        elif isinstance(action, Check):
            yield f"-- verify (read-only transaction): must return {action.expect!r}"
            yield action.query.as_string(conn) + ";"
        elif isinstance(action, BackfillJob):
            yield from self._backfill(action, conn, s)

    def _txn(
        self, txn: Txn, conn: psycopg.Connection[Any] | None, s: Settings, skipped: bool
    ) -> Iterator[str]:
        for stmt in txn.statements:
            target = f" on {stmt.table}" if stmt.table else ""
            facts = (
                ["rewrites the table"]
                if stmt.rewrites
                else ["scans the table"]
                if stmt.scans
                else []
            )
            facts += [stmt.note] if stmt.note else []
            yield f"-- {stmt.lock.sql_name}{target} ({stmt.lock.describe_blocking()})" + "".join(
                f"; {f}" for f in facts
            )
        if txn.blocks_app:
            yield (
                f"-- retried up to {s.lock_retries} times on lock timeout, lock_timeout"
                f" {_fmt_ms(lock_timeout_ms(s, 1))} rising to {_fmt_ms(s.lock_timeout_max)}"
            )
        elif txn.statements and txn.lock.value:
            yield "-- waits as long as it needs: no application query queues behind this lock"
        if not txn.transactional:
            yield "-- outside any transaction"
        already = skipped
        if not skipped and conn is not None and txn.skip_if is not None:
            row = conn.execute(txn.skip_if).fetchone()
            already = bool(row and row[0])
            if already:
                yield "-- the catalog shows this is already done: skipped"
        prefix = "-- " if already else ""
        for query in render(txn, s):
            yield prefix + query.as_string(conn) + ";"

    def _backfill(
        self, job: BackfillJob, conn: psycopg.Connection[Any] | None, s: Settings
    ) -> Iterator[str]:
        opts = job.options
        key: Key | None = primary_key(conn, job.table) if conn is not None else None
        shown = key or Key(("<primary key>",))
        where = job.where or default_where(job.set)
        size = INITIAL_AUTO_BATCH if opts.batch_size == "auto" else int(opts.batch_size)
        sizing = (
            f"batches sized to {opts.batch_time}ms (start {size}, {opts.min_batch}..{opts.max_batch} rows)"
            if opts.batch_size == "auto"
            else f"batches of {size} rows"
        )
        yield f"-- backfill of {job.table} in primary-key order, {sizing}, workers {opts.workers}"
        if conn is not None and not self._exists(conn, job.table):
            yield f"-- {job.table} does not exist yet: no estimate"
        elif conn is not None:
            rows = estimate_rows(conn, job.table)
            batches = math.ceil(rows / size) if size else 0
            yield f"-- about {rows:,} rows; about {batches:,} batches at {size} rows"
            if key is None:
                yield "-- WARNING: the table has no primary key"
        yield "-- ROW EXCLUSIVE and row locks only (blocks no reads or writes); each batch:"
        yield "BEGIN;"
        yield (
            f"SET LOCAL lock_timeout = '{lock_timeout_ms(s, 1)}ms'; SET LOCAL statement_timeout ="
            f" '{int(max(opts.batch_time * 10, 1000)) if opts.batch_size == 'auto' else 0}ms';"
        )
        yield upper_bound_sql(job.table, shown, first=False).as_string(conn) + ";"
        yield batch_sql(job, shown, where, first=False).as_string(conn) + ";"
        yield f"-- checkpoint: UPDATE {self.store.schema}.backfills SET last_key = <upper>, rows_done = … ;"
        yield "COMMIT;"
        yield "-- when the walk is over, proof that no row is left:"
        yield remaining_sql(job, where).as_string(conn) + ";"


def dry_run_text(loaded: LoadedPlan, dsn: str | None, *, state_schema: str = "zdm") -> str:
    return "\n".join(DryRun(loaded, dsn, state_schema=state_schema).lines()) + "\n"


__all__ = ["DryRun", "dry_run_text", "sql"]
