"""The one retry policy: whole transactions, only for contention, bounded, with backoff and jitter."""

from __future__ import annotations

from collections.abc import Callable

import tenacity
from psycopg import errors

from zdm.plan import Settings

CONTENTION = (errors.LockNotAvailable, errors.DeadlockDetected, errors.SerializationFailure)


def contended(e: BaseException) -> bool:
    """Contention a whole transaction can be run again for: a lock wait past lock_timeout, a
    deadlock, a serialization failure, or two sessions' DDL updating one catalog row at once
    (PostgreSQL's internal error "tuple concurrently updated", e.g. a DROP INDEX while another
    session's CREATE INDEX CONCURRENTLY marks the same index valid)."""
    if isinstance(e, CONTENTION):
        return True
    return isinstance(e, errors.InternalError_) and "tuple concurrently updated" in (
        e.diag.message_primary or ""
    )


def lock_timeout_ms(settings: Settings, attempt: int) -> int:
    """First attempt: lock_timeout; each later one waits 1.5x longer, up to lock_timeout_max."""
    return int(min(settings.lock_timeout * 1.5 ** (attempt - 1), settings.lock_timeout_max))


def retrying(
    settings: Settings, before_sleep: Callable[[tenacity.RetryCallState], None]
) -> tenacity.Retrying:
    """Retries a whole transaction on lock timeout, deadlock or serialization failure."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(contended),
        stop=tenacity.stop_after_attempt(settings.lock_retries),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=settings.retry_max_wait / 1000),
        before_sleep=before_sleep,
        reraise=True,
    )
