"""Who owns a run: a token and a lease in the run's row, besides the plan's session lock.

The session advisory lock keeps a second runner out while the owner's lock connection lives. The
lease is what the owner proves itself by, in short transactions that hold nothing between them:
it claims the run with a fresh token, renews the lease with every heartbeat, and before every
unit of work checks that the row still carries its token and an unexpired lease
(`still_owner`). A runner whose lock connection died, or that lost the run to another, fails
that check and stops; one that reconnects proves with the same check that nobody took the run
in between.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql

# How long a lease lasts without renewal; the heartbeat renews it every HEARTBEAT_S (engine/ownership.py).
LEASE_S = 30.0


class OwnershipLost(Exception):
    """The run's row no longer names this runner as its owner with a live lease, or the
    connection to check it failed (`error`)."""

    def __init__(self, message: str, error: psycopg.Error | None = None) -> None:
        super().__init__(message)
        self.error = error


def new_token() -> str:
    return uuid.uuid4().hex


class Lease:
    """The lease of run `run_id` in `schema`.runs held under `token`."""

    def __init__(self, schema: str, run_id: int, token: str, lease_s: float = LEASE_S) -> None:
        self.runs = sql.Identifier(schema, "runs")
        self.run_id = run_id
        self.token = token
        self.lease_s = lease_s

    def claim(self, conn: psycopg.Connection[Any]) -> str | None:
        """Makes this token the run's owner; returns the token it replaced while its lease was
        still live (a runner that lost its lock connection), which is fenced out from now on.

        Call it holding the plan's lock: the lock, not the lease, decides who may claim.
        """
        row = conn.execute(
            sql.SQL(
                "UPDATE {r} n SET owner_token = %s,"
                " lease_expires = now() + make_interval(secs => %s), heartbeat = now()"
                " FROM {r} o WHERE n.id = %s AND o.id = n.id"
                " RETURNING CASE WHEN o.lease_expires > now() AND o.owner_token IS DISTINCT FROM %s"
                " THEN o.owner_token END"
            ).format(r=self.runs),
            [self.token, self.lease_s, self.run_id, self.token],
        ).fetchone()
        return row[0] if row else None

    def renew(self, conn: psycopg.Connection[Any]) -> bool:
        """Extends the lease if this token still owns it; False when it does not."""
        row = conn.execute(
            sql.SQL(
                "UPDATE {} SET lease_expires = now() + make_interval(secs => %s), heartbeat = now()"
                " WHERE id = %s AND owner_token = %s AND lease_expires > now() RETURNING 1"
            ).format(self.runs),
            [self.lease_s, self.run_id, self.token],
        ).fetchone()
        return row is not None

    def still_owner(self, conn: psycopg.Connection[Any]) -> bool:
        """The fencing check: the run's row carries this token and an unexpired lease."""
        row = conn.execute(
            sql.SQL(
                "SELECT owner_token = %s AND lease_expires > now() FROM {} WHERE id = %s"
            ).format(self.runs),
            [self.token, self.run_id],
        ).fetchone()
        return bool(row and row[0])

    def taken_over(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether another runner claimed the run since this token did (after a reconnect)."""
        row = conn.execute(
            sql.SQL("SELECT owner_token IS DISTINCT FROM %s FROM {} WHERE id = %s").format(
                self.runs
            ),
            [self.token, self.run_id],
        ).fetchone()
        return bool(row and row[0])

    def check(self, conn: psycopg.Connection[Any]) -> None:
        """Raises OwnershipLost unless `still_owner`; a connection that fails cannot prove it (the
        plan's lock, which lived on it, is gone)."""
        try:
            owner = self.still_owner(conn)
        except psycopg.Error as e:
            raise OwnershipLost(self.lost_reason(e), e) from None
        if not owner:
            raise OwnershipLost(self.lost_reason())

    def lost_reason(self, error: psycopg.Error | None = None) -> str:
        """Why this runner stops: the run is another's, or its connection failed (`error`)."""
        if error is not None:
            text = str(error).strip()
            return (
                f"run {self.run_id}: the connection that held the plan's lock failed"
                f" ({text.splitlines()[0] if text else type(error).__name__}); this runner cannot"
                " prove it still owns the run, so it stops here"
            )
        return (
            f"run {self.run_id} is no longer owned by this runner (another took it over, or its"
            f" lease went {self.lease_s:.0f}s without renewal); it stops here"
        )
