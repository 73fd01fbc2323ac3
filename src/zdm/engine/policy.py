"""The lock policy, once for every unit and every backfill batch: the SETs that bound a unit's
lock wait and run time, which failures are retried (`retry.py`), what a failure says when the
retries run out or the connection drops, and the log line of a retry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import tenacity
from psycopg import sql

from zdm.engine.retry import CONTENTION, contended, lock_timeout_ms, retrying
from zdm.engine.session import ConnectionLost, connection_lost, scrub
from zdm.plan import Settings


class StepFailed(Exception):
    """A step could not finish; the run is left failed and resumable."""


def timeout_sets(lock_timeout: str, statement_timeout: str, *, local: bool) -> list[sql.Composed]:
    """`SET [LOCAL] lock_timeout = …; SET [LOCAL] statement_timeout = …`: LOCAL inside a
    transaction; a session-level SET only for a unit that cannot run in one, reset right after."""
    scope = sql.SQL("SET LOCAL" if local else "SET")
    return [
        sql.SQL("{} lock_timeout = {}").format(scope, sql.Literal(lock_timeout)),
        sql.SQL("{} statement_timeout = {}").format(scope, sql.Literal(statement_timeout)),
    ]


def under_deadlock_timeout(settings: Settings, conn: psycopg.Connection[Any]) -> Settings:
    """The plan's settings with every lock wait of zdm's capped at half the server's
    `deadlock_timeout` (read once, on the connection the executor is made for).

    In a lock cycle the server ends the session whose wait passes `deadlock_timeout` first: most
    often the application, which started waiting before zdm's statement closed the cycle (a
    multi-row UPDATE holding a row a backfill round needs, an INSERT holding the referencing
    table that a contract unit must lock next). A zdm wait shorter than that ends on zdm's
    side, as a lock timeout it retries, before the application's deadlock check runs."""
    row = conn.execute(
        "SELECT setting::int FROM pg_settings WHERE name = 'deadlock_timeout'"
    ).fetchone()
    cap = max(1, row[0] // 2) if row is not None else settings.lock_timeout_max
    if settings.lock_timeout_max <= cap:
        return settings
    return settings.model_copy(
        update={"lock_timeout": min(settings.lock_timeout, cap), "lock_timeout_max": cap}
    )


def failure(label: str, e: psycopg.Error, settings: Settings) -> StepFailed | ConnectionLost:
    """What a unit or a batch that failed on `e` reports: contention that outlasted every retry,
    a lost connection (the run reconnects), or any other error of the server."""
    if contended(e):
        return StepFailed(f"{label}: gave up after {settings.lock_retries} attempts: {pg_error(e)}")
    if connection_lost(e):
        return ConnectionLost(f"{label}: {pg_error(e)}")
    return StepFailed(f"{label}: {pg_error(e)}")


def log_retry(
    log: Any, event: str, state: tenacity.RetryCallState, settings: Settings, **fields: Any
) -> None:
    """The warning before a retry: which attempt failed, of how many, on what."""
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        event,
        **fields,
        attempt=state.attempt_number,
        of=settings.lock_retries,
        lock_timeout_ms=lock_timeout_ms(settings, state.attempt_number),
        error=type(exc).__name__ if exc else None,
    )


def pg_error(e: psycopg.Error) -> str:
    """`[SQLSTATE] message` on one line, connection strings scrubbed."""
    state = f"[{e.sqlstate}] " if e.sqlstate else ""
    return scrub(state + str(e).strip().replace("\n", " "))


OnRetry = Callable[[tenacity.RetryCallState], None]

__all__ = [
    "CONTENTION",
    "OnRetry",
    "StepFailed",
    "failure",
    "lock_timeout_ms",
    "log_retry",
    "pg_error",
    "retrying",
    "timeout_sets",
    "under_deadlock_timeout",
]
