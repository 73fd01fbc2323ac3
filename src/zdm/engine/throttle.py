"""Why a backfill should wait before its next batch: replica lag, a custom query, vacuum, a pause.

Each check returns a reason (a short sentence for logs and `zdm status`) or None. They run on
the supervisor's connection between batches, never inside a batch's transaction.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg import sql

from zdm.ddl import Table, user_sql

# A throttle query runs at most this long: a hung check must not hang the backfill unseen.
THROTTLE_QUERY_TIMEOUT_MS = 5000

REPLICAS_SQL = sql.SQL(
    "SELECT pid, coalesce(application_name, ''), coalesce(client_addr::text, 'local'),"
    " extract(epoch FROM replay_lag) * 1000,"
    " pg_wal_lsn_diff(flush_lsn, '0/0')::float8, pg_wal_lsn_diff(replay_lsn, '0/0')::float8,"
    " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8, reply_time"
    " FROM pg_stat_replication WHERE state = 'streaming'"
)

VACUUM_SQL = sql.SQL(
    "SELECT a.backend_type, v.phase FROM pg_stat_progress_vacuum v"
    " JOIN pg_stat_activity a ON a.pid = v.pid WHERE v.relid = to_regclass(%s) LIMIT 1"
)


@dataclass
class _Standby:
    # (monotonic time first seen flushed on the standby, LSN), oldest first
    flushed: deque[tuple[float, float]] = field(default_factory=deque)
    reply: Any = None
    stalled_ms: float = 0.0


@dataclass
class ReplicaLag:
    """How far behind in replay each streaming standby is, in milliseconds.

    `replay_lag` alone cannot tell: after an idle spell the server has no sample to interpolate
    from, and a standby whose replay is stuck shows NULL there for ever. So the lag is also
    measured here: WAL the standby had flushed at time T and still has not replayed when it
    next reports is at least now - T old. Standbys report on each WAL message they receive, so
    the estimate moves with the primary's own writes (a quiet primary still writes the run's
    heartbeat every few seconds).
    """

    limit_ms: float
    standbys: dict[int, _Standby] = field(default_factory=dict)
    warned: bool = False

    def reason(self, conn: psycopg.Connection[Any]) -> str | None:
        now = time.monotonic()
        worst: tuple[float, str] | None = None
        seen = set()
        for pid, app, addr, replay_lag, flush, replay, behind, reply in conn.execute(
            REPLICAS_SQL
        ).fetchall():
            if flush is None or replay is None:
                if not self.warned:  # positions are hidden from roles without pg_monitor
                    self.warned = True
                    structlog.get_logger("zdm.backfill").warning(
                        "replica_lag_unknown",
                        replica=app or addr,
                        hint="grant pg_monitor to the role zdm connects as, or the lag of"
                        " this standby cannot be seen and does not hold the backfill",
                    )
                continue
            seen.add(pid)
            st = self.standbys.setdefault(pid, _Standby())
            if not st.flushed or flush > st.flushed[-1][1]:
                st.flushed.append((now, flush))
            if reply != st.reply:
                st.reply = reply
                while st.flushed and st.flushed[0][1] <= replay:
                    st.flushed.popleft()
                st.stalled_ms = (now - st.flushed[0][0]) * 1000 if st.flushed else 0.0
            lag = max(float(replay_lag or 0.0), st.stalled_ms if behind and behind > 0 else 0.0)
            if lag > self.limit_ms and (worst is None or lag > worst[0]):
                # Stable text: it is what the state table shows, rewritten only when it changes.
                worst = (lag, f"replica {app or addr} replay lag over {_fmt(self.limit_ms)}")
        for pid in set(self.standbys) - seen:
            del self.standbys[pid]
        return worst[1] if worst else None


@dataclass
class Throttles:
    """The throttles a backfill step asks for, checked together."""

    table: Table
    max_replica_lag_ms: float | None = None
    throttle_query: str | None = None
    pause_on_autovacuum: bool = False
    log: Any = field(default_factory=lambda: structlog.get_logger("zdm.backfill"))
    _replicas: ReplicaLag | None = None

    def __post_init__(self) -> None:
        if self.max_replica_lag_ms is not None:
            self._replicas = ReplicaLag(self.max_replica_lag_ms)

    @classmethod
    def of(cls, table: Table, options: Any) -> Throttles:
        return cls(
            table,
            max_replica_lag_ms=getattr(options, "max_replica_lag", None),
            throttle_query=getattr(options, "throttle_query", None),
            pause_on_autovacuum=bool(getattr(options, "pause_on_autovacuum", False)),
        )

    @property
    def any(self) -> bool:
        return self._replicas is not None or bool(self.throttle_query) or self.pause_on_autovacuum

    def reasons(self, conn: psycopg.Connection[Any]) -> list[str]:
        found = []
        if self._replicas is not None:
            lag = self._replicas.reason(conn)
            if lag:
                found.append(lag)
        if self.throttle_query and query_says_wait(conn, self.throttle_query):
            found.append("throttle_query returned true")
        if self.pause_on_autovacuum:
            vacuum = vacuum_reason(conn, self.table)
            if vacuum:
                found.append(vacuum)
        return found


def query_says_wait(conn: psycopg.Connection[Any], query: str) -> bool:
    """The plan's throttle_query: wait while its first value is true. Read-only, time-limited."""
    with conn.transaction():
        conn.execute(
            sql.SQL("SET LOCAL statement_timeout = {}; SET TRANSACTION READ ONLY").format(
                sql.Literal(f"{THROTTLE_QUERY_TIMEOUT_MS}ms")
            )
        )
        row = conn.execute(user_sql(query)).fetchone()
    return bool(row and row[0])


def vacuum_reason(conn: psycopg.Connection[Any], table: Table) -> str | None:
    """A vacuum (autovacuum or not) working on the table: the backfill would compete with it."""
    row = conn.execute(VACUUM_SQL, [table.ident().as_string(conn)]).fetchone()
    if row is None:
        return None
    who = "autovacuum" if row[0] == "autovacuum worker" else "vacuum"
    return f"{who} on {table} ({row[1]})"


def _fmt(ms: float) -> str:
    return f"{ms / 1000:.1f}s" if ms >= 1000 else f"{ms:.0f}ms"
