"""Where zdm's connections lead: straight to PostgreSQL, or through a pooler that keeps a client on
one server session (session pooling), or through one that hands the session to whoever comes next
after every transaction (transaction or statement pooling, e.g. PgBouncer `pool_mode =
transaction`).

zdm refuses the last kind before it takes a lock or changes anything: see README "Connection
poolers" for why. The probe reads only `pg_backend_pid()` and the client address the server sees,
so it changes nothing and a pooler cannot fake it: one client connection that is pinned to a
server session sees the same backend in every transaction, and two client connections open at
once never share one.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from typing import Any

import psycopg

from zdm.engine.session import CLIENT_CHECK, connect

DIRECT = "direct"
SESSION = "session pooling"
TRANSACTION = "transaction pooling"

# Rounds of the two-connection probe: an idle PgBouncer gives the second client the server
# connection the first just released (LIFO), so one round tells; under application traffic the
# server connection may go elsewhere in between, and each further round is another chance.
PROBE_ROUNDS = 3
# How long the second connection may wait for a server session of its own.
SECOND_SESSION_WAIT_S = 10.0


class PoolerRefused(Exception):
    """zdm's connection goes through a pooler it cannot run behind (exit 2, nothing changed)."""


def pooling(conn: psycopg.Connection[Any], dsn: str) -> str:
    """DIRECT, SESSION or TRANSACTION: what stands between `conn` and its server session."""
    if _seen_as_ourselves(conn):
        return DIRECT
    probe = connect(dsn, "pooler probe")
    try:
        own: set[int] = set()
        other: set[int] = set()
        for _ in range(PROBE_ROUNDS):
            own.add(_backend_pid(conn))
            pid = _backend_pid_within(probe, SECOND_SESSION_WAIT_S)
            if pid is None:
                raise PoolerRefused(
                    f"a second connection to the database got no server session within"
                    f" {SECOND_SESSION_WAIT_S:.0f}s: zdm needs one per connection it opens"
                    " (two, plus one per backfill worker); connect zdm directly to PostgreSQL,"
                    " or give its pool more server connections"
                )
            other.add(pid)
            if len(own) > 1 or len(other) > 1 or own & other:
                return TRANSACTION
    finally:
        probe.close()
    return SESSION


def require_pinned(conn: psycopg.Connection[Any], dsn: str, command: str) -> str:
    """Refuses (PoolerRefused) a connection that transaction pooling does not keep on one
    server session; returns how `conn` is connected otherwise."""
    mode = pooling(conn, dsn)
    if mode == TRANSACTION:
        raise PoolerRefused(
            f"zdm {command} refuses to run through a connection pooler in transaction pooling"
            " mode (e.g. PgBouncer pool_mode = transaction or statement): the plan's lock and"
            " zdm's settings live in a server session the pooler hands to other clients between"
            " transactions; give zdm a DSN of its own (--dsn or ZDM_DSN) that connects directly"
            " to PostgreSQL or through session pooling"
        )
    return mode


def keep_client_check(conn: psycopg.Connection[Any]) -> bool:
    """Makes sure a pinned connection's statements stop when zdm dies: a session pooler may have
    dropped the startup option (PgBouncer `ignore_startup_parameters = options`) or refused it.

    Returns whether it had to SET the check on the session: `release` then RESETs it, and a
    session pooler's `server_reset_query` (DISCARD ALL) clears it after a crash.
    """
    if conn.info.server_version < 140000:
        return False
    row = conn.execute("SELECT current_setting(%s)", [CLIENT_CHECK]).fetchone()
    if row is not None and row[0] not in ("0", "0ms"):
        return False
    conn.execute("SELECT set_config(%s, '2s', false)", [CLIENT_CHECK])
    return True


def release(conn: psycopg.Connection[Any], *, reset_client_check: bool) -> None:
    """Closes a connection, first taking back the session setting `keep_client_check` made."""
    if reset_client_check:
        with contextlib.suppress(psycopg.Error):
            conn.execute("RESET client_connection_check_interval")
    conn.close()


def _backend_pid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def _backend_pid_within(conn: psycopg.Connection[Any], timeout_s: float) -> int | None:
    """pg_backend_pid() of `conn`, or None when no server session answers in time (a session pool
    with every server connection taken keeps the query waiting, silently)."""
    pg = conn.pgconn
    pg.send_query(b"SELECT pg_backend_pid()")
    deadline = time.monotonic() + timeout_s
    while pg.is_busy():
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        select.select([pg.socket], [], [], left)
        pg.consume_input()
    value = None
    while (result := pg.get_result()) is not None:
        if result.ntuples:
            cell = result.get_value(0, 0)
            value = int(cell) if cell is not None else None
    if value is None:
        raise psycopg.OperationalError(pg.get_error_message() or "the pooler probe failed")
    return value


def _seen_as_ourselves(conn: psycopg.Connection[Any]) -> bool:
    """The server sees the very TCP endpoint this client connects from: nothing in between."""
    try:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return False
            local = sock.getsockname()
    except OSError:
        return False
    row = conn.execute("SELECT host(inet_client_addr()), inet_client_port()").fetchone()
    if row is None or row[0] is None:
        return False
    return bool(row[1] == local[1] and _same_host(str(row[0]), str(local[0])))


def _same_host(seen: str, local: str) -> bool:
    return seen.removeprefix("::ffff:") == local.removeprefix("::ffff:")
