"""The one retry policy: whole transactions, only for contention, bounded, with backoff and jitter."""

from __future__ import annotations

from collections.abc import Callable

import tenacity
from psycopg import errors

from zdm.plan import Settings

CONTENTION = (errors.LockNotAvailable, errors.DeadlockDetected, errors.SerializationFailure)


def lock_timeout_ms(settings: Settings, attempt: int) -> int:
    """First attempt: lock_timeout; each later one waits 1.5x longer, up to lock_timeout_max."""
    return int(min(settings.lock_timeout * 1.5 ** (attempt - 1), settings.lock_timeout_max))


def retrying(
    settings: Settings, before_sleep: Callable[[tenacity.RetryCallState], None]
) -> tenacity.Retrying:
    """Retries a whole transaction on lock timeout, deadlock or serialization failure."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(CONTENTION),
        stop=tenacity.stop_after_attempt(settings.lock_retries),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=settings.retry_max_wait / 1000),
        before_sleep=before_sleep,
        reraise=True,
    )
