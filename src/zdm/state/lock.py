"""The per-plan run lock: a session advisory lock held on a dedicated connection for a run's life.

A killed process drops its connection and with it the lock, so a crash never leaves a plan locked.
"""

from __future__ import annotations

from typing import Any

import psycopg

# First half of the two-key advisory lock: "zdm" in ASCII; the second half is hashtext(plan).
LOCK_CLASS = 0x7A646D


class LockHeld(Exception):
    """Another session runs this plan."""

    def __init__(self, plan: str, holder: str) -> None:
        super().__init__(f"plan {plan!r} is being run by {holder}")
        self.plan = plan
        self.holder = holder


class PlanLock:
    def __init__(self, conn: psycopg.Connection[Any], plan: str) -> None:
        self.conn = conn
        self.plan = plan

    def acquire(self) -> None:
        row = self.conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", [LOCK_CLASS, self.plan]
        ).fetchone()
        if not (row and row[0]):
            raise LockHeld(self.plan, self.holder() or "another session")

    def release(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [LOCK_CLASS, self.plan])

    def holder(self) -> str | None:
        """Who holds the lock: the holder's application_name (host and pid), backend pid, age."""
        row = self.conn.execute(
            "SELECT a.pid, a.application_name, a.client_addr::text, now() - a.backend_start"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s"
            " AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid AND l.objsubid = 2",
            [LOCK_CLASS, self.plan],
        ).fetchone()
        if row is None:
            return None
        pid, app, addr, age = row
        where = f" from {addr}" if addr else ""
        return f"{app or 'a session'} (backend pid {pid}{where}, connected {str(age).split('.')[0]} ago)"
