"""--dry-run: the executor's statements, printed instead of run, in a read-only transaction.

With a database it also shows which units the catalog says are done, row estimates and batch
counts, and which steps a run already finished; it never creates zdm's state schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

from zdm.ddl import BackfillJob, Check, Table, Txn, catalog
from zdm.engine.actions import Followers, OnCommit, followers_of, perform
from zdm.engine.backfill import walk_lines
from zdm.engine.executor import render
from zdm.engine.partitions import refusals, with_partitions
from zdm.engine.policy import under_deadlock_timeout
from zdm.engine.probe import expression_issues, pending_keys
from zdm.engine.retry import lock_timeout_ms
from zdm.engine.session import connect, redact, server_version
from zdm.operations import Context, plan_memo, plan_step
from zdm.operations.base import LATEST_SERVER_VERSION
from zdm.plan import LoadedPlan, PlanError, Settings
from zdm.state import Direction, RunStatus, StepStatus, Store


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
        # With a database, the waits its executor would use (capped below its deadlock_timeout).
        s = self.plan.settings if conn is None else under_deadlock_timeout(self.plan.settings, conn)
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
        steps = self.plan.steps()
        if steps and all(step.key in done for step in steps):
            yield "-- every step is done: `zdm run` has nothing left to execute"
        # The catalog says what is done only up to the step a run would start with: a later
        # probe answers for today's catalog, which earlier steps change (a trigger that
        # drop_dual_write finds missing today is created by dual_write first).
        pending = next((step.key for step in steps if step.key not in done), None)
        ctx = Context.of(self.loaded, version, self.store.schema)
        if conn is not None:
            # Partitioned tables get their per-partition statements, as the catalog is now.
            ctx = with_partitions(ctx, conn, self.plan)
            for issue in refusals(self.loaded, ctx, None):
                yield f"-- REFUSED: {issue}"
        phase = None
        # Backfills of one table in a row walk it once, as the runner groups them.
        statuses = [StepStatus.DONE if step.key in done else StepStatus.PENDING for step in steps]
        absorbed: dict[int, str] = {}
        for ordinal, step in enumerate(steps):
            if step.phase != phase:
                phase = step.phase
                yield ""
                if phase in self.plan.gates:
                    yield "-- ===== gate: the run stops here until `zdm run --continue` ====="
                yield f"-- ===== phase {phase} ====="
            yield ""
            origin = self.loaded.step_origins.get(step.key)
            yield (
                f"-- step {step.key} {step.kind}"
                + (f" (from {origin})" if origin else "")
                + (" — already done by this run: skipped" if step.key in done else "")
            )
            if ordinal in absorbed:
                yield f"-- walked in the same pass over the table as step {absorbed[ordinal]}"
                continue
            followers = followers_of(steps, statuses, ordinal, ctx)
            absorbed.update((o, step.key) for o, _ in followers)
            memo = plan_memo(step.spec, ctx)
            if memo is not None and step.key not in done:
                yield (
                    "-- before its first attempt, recorded in zdm's state for rollback: "
                    + memo.as_string(conn)
                )
            sink = PrintSink(
                conn, s, self.store.schema, skipped=step.key in done, probe=step.key == pending
            )
            perform(plan_step(step.spec, ctx), sink, followers=followers)
            yield from sink.lines

    def _done_steps(self, conn: psycopg.Connection[Any] | None) -> set[str]:
        if conn is None or not self.store.exists(conn):
            return set()
        run = self.store.unfinished_run(conn, self.loaded.name)
        if run is None:
            latest = self.store.latest_run(conn, self.loaded.name)
            if (
                latest is not None
                and (latest.status, latest.direction) == (RunStatus.COMPLETED, Direction.FORWARD)
                and latest.plan_sha256 == self.loaded.sha256
            ):
                return {step.key for step in self.plan.steps()}  # `zdm run` does nothing
            return set()
        return {r.key for r in self.store.steps(conn, run.id) if r.status == StepStatus.DONE}


class PrintSink:
    """The dry-run's sink: collects what the live sink would run, as SQL with its lock modes,
    the catalog's answers and estimates, instead of running it."""

    def __init__(
        self,
        conn: psycopg.Connection[Any] | None,
        settings: Settings,
        state_schema: str,
        *,
        skipped: bool = False,
        probe: bool = True,
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.state_schema = state_schema
        self.skipped = skipped
        """The step is done already: its statements are shown as comments."""
        self.probe = probe
        """Ask the catalog whether a unit is done (only up to the step a run would start with)."""
        self.lines: list[str] = []

    def txn(self, txn: Txn, on_commit: OnCommit | None) -> bool:
        self.lines += txn_lines(txn, self.conn, self.settings, self.skipped, self.probe)
        return False

    def check(self, check: Check) -> None:
        self.lines.append(f"-- verify (read-only transaction): must return {check.expect!r}")
        self.lines.append(check.query.as_string(self.conn) + ";")

    def backfill(self, job: BackfillJob, followers: Followers) -> None:
        conn = self.conn
        exists = conn is None or _exists(conn, job.table)
        jobs = [job, *(j for _, j in followers)]
        # The backfill module renders its own walk: the one call of its dry-run renderer.
        self.lines += walk_lines(
            jobs, conn, self.settings, state_schema=self.state_schema, exists=exists
        )


def _exists(conn: psycopg.Connection[Any], table: Table) -> bool:
    row = conn.execute(catalog.table_exists(table)).fetchone()
    return bool(row and row[0])


def txn_lines(
    txn: Txn,
    conn: psycopg.Connection[Any] | None,
    s: Settings,
    skipped: bool,
    probe: bool = True,
) -> Iterator[str]:
    """A transaction as the dry-run shows it: its locks, its policy, its SQL."""
    for stmt in txn.statements:
        named = [str(t) for t in (stmt.table, *stmt.also) if t is not None]
        target = f" on {', '.join(named)}" if named else ""
        facts = (
            ["rewrites the table"] if stmt.rewrites else ["scans the table"] if stmt.scans else []
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
    if txn.wait is not None:
        yield f"-- first waits, taking no lock, for as long as {txn.wait.reason}"
    already = skipped
    if not skipped and conn is not None and txn.skip_if is not None:
        row = conn.execute(txn.skip_if).fetchone()
        done_now = bool(row and row[0])
        if done_now and probe:
            already = True
            yield "-- the catalog shows this is already done: skipped"
        elif done_now:
            yield "-- skipped if the catalog still shows it done when the run gets here (it does now)"
    for query in render(txn, s):
        text = query.as_string(conn).rstrip()
        text += "" if text.endswith(";") else ";"  # raw SQL may end with its own
        # Every line of a skipped statement, a function body's too, is a comment.
        yield "\n".join("-- " + line for line in text.split("\n")) if already else text


def dry_run_text(loaded: LoadedPlan, dsn: str | None, *, state_schema: str = "zdm") -> str:
    if dsn is not None:
        # The dry-run's own transaction is read-only; the probe's temporary copies need another.
        with connect(dsn, f"dry-run {loaded.name}") as conn:
            pending = pending_keys(conn, Store(state_schema), loaded.name)
            issues = expression_issues(conn, loaded, pending)
        if issues:
            raise PlanError(issues)
    return "\n".join(DryRun(loaded, dsn, state_schema=state_schema).lines()) + "\n"
