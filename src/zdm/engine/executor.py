"""The only code that executes migration SQL: transaction boundaries, timeouts, retries, blockers.

Policy is decided here once, from each unit's lock mode: a unit whose lock would queue the
application runs under a short, escalating lock_timeout and is retried whole; a SHARE UPDATE
EXCLUSIVE unit (concurrent index builds, VALIDATE) waits as long as it needs. `render` gives the
exact statements `run` executes, which is what the dry-run prints.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import structlog
import tenacity
from psycopg import errors, sql

from zdm.ddl import Check, Query, Txn, Wait
from zdm.engine.policy import (
    StepFailed,
    failure,
    lock_timeout_ms,
    log_retry,
    pg_error,
    retrying,
    timeout_sets,
)
from zdm.engine.session import ConnectionLost, connection_lost
from zdm.plan import Settings

# A transaction holding a lock the migration needs for longer than this is not the application's
# own short statement: wait for it to end instead of queueing behind it.
LONG_HOLDER_MS = 1000
# A session idle in its transaction for longer than this waits for its client, not the database:
# its locks stay until the client's next round trip, so it counts as long whatever its age.
IDLE_HOLDER_MS = 10

OnCommit = Callable[[psycopg.Connection[Any]], None]
# A transaction that held a lock: its backend pid and when it began (a pid outlives transactions).
Holder = tuple[int, datetime]
OnEvent = Callable[..., None]


BEGIN = sql.SQL("BEGIN")
COMMIT = sql.SQL("COMMIT")


def timeouts(txn: Txn, settings: Settings, attempt: int = 1) -> list[sql.Composed]:
    """The SET statements that open a unit: short lock_timeout only where the app would queue."""
    if txn.blocks_app:
        lock, stmt = f"{lock_timeout_ms(settings, attempt)}ms", f"{settings.statement_timeout}ms"
    else:
        lock, stmt = "0", "0"
    return timeout_sets(lock, stmt, local=txn.transactional)


# A unit outside a transaction sets its timeouts on the session, and takes them back after it:
# nothing zdm sets outlives the unit, on the session or on a pooled server connection.
RESETS = (sql.SQL("RESET lock_timeout"), sql.SQL("RESET statement_timeout"))


def render(txn: Txn, settings: Settings, attempt: int = 1) -> list[Query]:
    """Every statement of one attempt of `txn`, in order, transaction boundaries included."""
    body: list[Query] = [
        *timeouts(txn, settings, attempt),
        *(s.sql for s in txn.statements),
    ]
    return [BEGIN, *body, COMMIT] if txn.transactional else [*body, *RESETS]


@dataclass
class Executor:
    conn: psycopg.Connection[Any]
    settings: Settings
    monitor: psycopg.Connection[Any] | None = None
    on_event: OnEvent | None = None
    fence: Callable[[], None] | None = None
    """Raises when this runner no longer owns the run (state/lease.py): checked before each unit."""
    log: Any = field(default_factory=lambda: structlog.get_logger("zdm.executor"))

    # -- probes and checks -------------------------------------------------------------------

    def probe(self, query: Query) -> bool:
        row = self.conn.execute(query).fetchone()
        return bool(row and row[0])

    def check(self, check: Check) -> None:
        """Runs a verify query read-only; fails the step unless it returns the expected value."""
        if self.fence is not None:
            self.fence()
        self.log.info("verify", label=check.label, sql=_text(check.query, self.conn))
        try:
            with self.conn.transaction():
                self.conn.execute("SET TRANSACTION READ ONLY")
                row = self.conn.execute(check.query).fetchone()
        except psycopg.Error as e:
            if connection_lost(e):
                raise ConnectionLost(f"{check.label}: {pg_error(e)}") from e
            raise StepFailed(f"{check.label}: the query failed: {pg_error(e)}") from None
        value = row[0] if row else None
        ok = matches(value, check.expect)
        self._event(
            "verify",
            label=check.label,
            sql=_text(check.query, self.conn),
            expect=check.expect,
            value=value,
            ok=ok,
        )
        if not ok:
            raise StepFailed(f"{check.label}: expected {check.expect!r}, got {value!r}")

    # -- units -------------------------------------------------------------------------------

    def run(self, txn: Txn, on_commit: OnCommit | None = None) -> bool:
        """Runs `txn` unless its probe says it is done; returns whether it ran.

        `on_commit` writes bookkeeping inside the same transaction (transactional units) or right
        after the statement (CONCURRENTLY, where no transaction is possible).
        """
        if self.fence is not None:
            self.fence()
        if txn.wait is not None:
            self.wait_while(txn.label, txn.wait)
        if txn.skip_if is not None and self.probe(txn.skip_if):
            self.log.info("already_done", unit=txn.label)
            return False
        started = time.monotonic()
        attempts = 1
        try:
            if txn.transactional:
                attempts, held_ms = self._run_transaction(txn, on_commit)
            else:
                statements = render(txn, self.settings)
                try:
                    for stmt in statements[: -len(RESETS)]:
                        self._execute(stmt)
                finally:
                    with contextlib.suppress(psycopg.Error):
                        for stmt in RESETS:
                            self._execute(stmt)
                if on_commit is not None:
                    on_commit(self.conn)
        except psycopg.Error as e:
            failed = failure(txn.label, e, self.settings)
            raise failed from (e if isinstance(failed, ConnectionLost) else None)
        ms = round((time.monotonic() - started) * 1000)
        if not txn.transactional:
            held_ms = ms
        self.log.info("unit_done", unit=txn.label, lock=txn.lock.sql_name, ms=ms, held_ms=held_ms)
        # ms spans retries and waits; held_ms is the committed attempt alone, BEGIN to COMMIT
        # (its lock wait included): the longest the application could queue behind this unit.
        self._event(
            "unit_done",
            unit=txn.label,
            lock=txn.lock.sql_name,
            ms=ms,
            held_ms=held_ms,
            attempts=attempts,
            blocks_app=txn.blocks_app,
            sql=[_text(s.sql, self.conn) for s in txn.statements],
            **made(txn),
        )
        return True

    def _run_transaction(self, txn: Txn, on_commit: OnCommit | None) -> tuple[int, int]:
        """Returns the attempts made and the committed attempt's duration in ms."""
        culprits: list[Holder] = []  # what held the lock through the last failed attempt
        for attempt in retrying(self.settings, self._before_retry(txn, culprits)):
            with attempt:
                n = attempt.retry_state.attempt_number
                if txn.blocks_app:
                    self.wait_for_long_holders(txn, culprits)
                began = time.monotonic()
                self._execute(BEGIN)
                with self.conn.transaction():
                    for stmt in render(txn, self.settings, n)[1:-1]:
                        self._execute(stmt)
                    if on_commit is not None:
                        on_commit(self.conn)
                self._execute(COMMIT, run=False)
                return n, round((time.monotonic() - began) * 1000)
        raise AssertionError("unreachable")

    def _execute(self, stmt: Query, *, run: bool = True) -> None:
        """Executes one statement; BEGIN/COMMIT are logged only (conn.transaction() issues them)."""
        self.log.debug("sql", sql=_text(stmt, self.conn))
        if run and stmt is not BEGIN:
            self.conn.execute(stmt)

    def _before_retry(
        self, txn: Txn, culprits: list[Holder]
    ) -> Callable[[tenacity.RetryCallState], None]:
        """Logs who was in the way of a failed attempt, and keeps in `culprits` the transactions
        that held a conflicting lock through all of it: the next attempt waits for them to end,
        whatever their age, instead of queueing behind them again."""

        def log_blockers(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            blockers = self.blockers(txn)
            waited_ms = lock_timeout_ms(self.settings, state.attempt_number)
            culprits[:] = [
                (h["pid"], h["xact_start"]) for h in blockers if h["xact_ms"] >= waited_ms
            ]
            log_retry(
                self.log, "lock_retry", state, self.settings, unit=txn.label, blockers=blockers
            )
            self._event(
                "lock_retry",
                unit=txn.label,
                attempt=state.attempt_number,
                error=type(exc).__name__ if exc else None,
                blockers=blockers,
            )

        return log_blockers

    # -- who is in the way -------------------------------------------------------------------

    def _holders(
        self,
        txn: Txn,
        min_age_ms: int,
        idle_ms: int | None = None,
        culprits: Sequence[Holder] = (),
    ) -> list[dict[str, Any]]:
        """Conflicting holders whose transaction is older than `min_age_ms`; with `idle_ms`, also
        those idle in it for that long, and autovacuum workers of any age; and `culprits`, the
        transactions (pid, start) that made an attempt fail, while they last."""
        if self.monitor is None or not txn.tables:
            return []
        rows = self.monitor.execute(
            "SELECT DISTINCT a.pid, l.mode, a.state, a.application_name,"
            " round(extract(epoch FROM now() - a.xact_start) * 1000)::bigint AS xact_ms,"
            " left(a.query, 200) AS query, a.backend_type = 'autovacuum worker' AS autovacuum,"
            " a.xact_start"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'relation' AND l.granted"
            " AND l.relation IN (SELECT to_regclass(t) FROM unnest(%s::text[]) t)"
            " AND l.mode = ANY(%s) AND a.pid <> pg_backend_pid() AND a.pid <> %s"
            " AND (a.xact_start < now() - make_interval(secs => %s / 1000.0)"
            "  OR (%s::int IS NOT NULL AND (a.backend_type = 'autovacuum worker'"
            "      OR a.state LIKE 'idle in transaction%%'"
            "      AND a.state_change < now() - make_interval(secs => %s / 1000.0)))"
            "  OR (a.pid, a.xact_start) IN (SELECT * FROM unnest(%s::int[], %s::timestamptz[])))"
            " ORDER BY xact_ms DESC",
            [
                [t.ident().as_string(self.monitor) for t in txn.tables],
                list(txn.lock.pg_names),
                self.conn.info.backend_pid,
                min_age_ms,
                idle_ms,
                idle_ms,
                [pid for pid, _ in culprits],
                [start for _, start in culprits],
            ],
        ).fetchall()
        keys = (
            "pid",
            "mode",
            "state",
            "application",
            "xact_ms",
            "query",
            "autovacuum",
            "xact_start",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def blockers(self, txn: Txn) -> list[dict[str, Any]]:
        """Sessions holding a lock on the unit's tables that conflicts with the one it needs."""
        try:
            return self._holders(txn, 0)
        except psycopg.Error:
            return []

    def wait_for_long_holders(self, txn: Txn, culprits: Sequence[Holder] = ()) -> None:
        """Waits, without queueing for the lock, while a long transaction holds a conflicting one
        (or one of `culprits`, which made the last attempt time out, however young).

        Queueing behind it would make every later query on the table queue behind zdm.
        """
        deadline = (
            time.monotonic() + self.settings.lock_retries * self.settings.retry_max_wait / 1000
        )
        logged = 0.0
        signalled: set[int] = set()  # autovacuums told to give way (or that would not be)
        while True:
            holders = self._holders(txn, LONG_HOLDER_MS, IDLE_HOLDER_MS, culprits)
            for h in holders:
                if h["pid"] not in signalled and yields(h):
                    signalled.add(h["pid"])
                    self._cancel_autovacuum(txn, h)
            if not holders:
                return
            now = time.monotonic()
            if now - logged >= 5:
                logged = now
                self.log.warning("waiting_for_long_transaction", unit=txn.label, holders=holders)
                self._event("long_holder_wait", unit=txn.label, holders=holders)
            if now > deadline:
                raise StepFailed(
                    f"{txn.label}: transactions holding {txn.tables[0]} did not end: {holders}"
                )
            time.sleep(0.1)

    def wait_while(self, label: str, wait: Wait) -> None:
        """Polls the unit's `wait` probe, holding no lock, until it is false; logs every 5 s."""
        started = time.monotonic()
        logged = -5.0
        while self.probe(wait.query):
            waited = time.monotonic() - started
            if waited - logged >= 5:
                logged = waited
                self.log.warning(
                    "waiting", unit=label, reason=wait.reason, waited_s=round(waited, 1)
                )
                self._event("wait", unit=label, reason=wait.reason)
            time.sleep(0.2)

    def _cancel_autovacuum(self, txn: Txn, holder: dict[str, Any]) -> None:
        """Cancels an autovacuum in the way, as the server itself does for a waiting lock request
        after `deadlock_timeout`; autovacuum comes back to the table later. Without the right to
        (superuser, or pg_signal_autovacuum_worker on PostgreSQL 18), zdm waits for it to end.

        Either way the wait goes on until it is gone: a cancel takes a moment to land."""
        assert self.monitor is not None
        try:
            row = self.monitor.execute("SELECT pg_cancel_backend(%s)", [holder["pid"]]).fetchone()
            ok, error = bool(row and row[0]), None
        except psycopg.Error as e:
            ok, error = False, pg_error(e)
        self.log.warning(
            "autovacuum_cancelled" if ok else "autovacuum_not_cancelled",
            unit=txn.label,
            holder=holder,
            error=error,
        )
        self._event(
            "autovacuum_cancelled" if ok else "autovacuum_not_cancelled",
            unit=txn.label,
            holder=holder,
            error=error,
        )

    def _event(self, name: str, **detail: Any) -> None:
        if self.on_event is not None:
            self.on_event(name, **detail)


def yields(holder: dict[str, Any]) -> bool:
    """An autovacuum that gives way to a lock request: not one that prevents wraparound."""
    return bool(holder["autovacuum"]) and "to prevent wraparound" not in (holder["query"] or "")


def matches(value: Any, expect: Any) -> bool:
    """Compares a query result with a plan's `expect`, across int/Decimal/str representations."""
    if isinstance(expect, bool) or expect is None:
        return bool(value is expect or value == expect)
    if isinstance(expect, int | float) and isinstance(value, int | float | Decimal):
        return Decimal(str(value)) == Decimal(str(expect))
    return str(value) == str(expect)


def made(txn: Txn) -> dict[str, Any]:
    """What a unit proved or built, for its `unit_done` event: the constraints it validated
    (`[schema, table, constraint]`) and the indexes it built (`[schema, index]`)."""
    detail: dict[str, Any] = {}
    validated = [
        [s.table.schema, s.table.name, s.validates]
        for s in txn.statements
        if s.validates is not None and s.table is not None
    ]
    built = [[s.builds.schema, s.builds.name] for s in txn.statements if s.builds is not None]
    if validated:
        detail["validated"] = validated
    if built:
        detail["indexes"] = built
    return detail


def _text(stmt: Query, conn: psycopg.Connection[Any] | None = None) -> str:
    return str(stmt.as_string(conn))


__all__ = ["Executor", "StepFailed", "errors", "render", "timeouts"]
