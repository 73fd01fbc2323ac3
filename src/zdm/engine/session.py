"""Connections: where the DSN comes from, how zdm's sessions identify themselves, redaction."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo


class ConnectionFailed(Exception):
    pass


class ConnectionLost(Exception):
    """The server ended one of zdm's connections (restart, failover, pg_terminate_backend, a
    network drop): the run reconnects and resumes from its last checkpoint (`Runner.run`)."""


# Class 08 (connection exception), and the server ending the session: 57P01 admin_shutdown
# (pg_terminate_backend, a fast shutdown), 57P02 crash_shutdown, 57P03 cannot_connect_now.
_LOST_STATES = ("57P01", "57P02", "57P03")


def connection_lost(e: BaseException) -> bool:
    """Whether `e` means the connection is gone, as opposed to a statement that failed on it."""
    if isinstance(e, ConnectionLost | ConnectionFailed):
        return True
    if isinstance(e, psycopg.InterfaceError):  # used after it closed
        return True
    if not isinstance(e, psycopg.OperationalError):
        return False
    state = e.sqlstate
    return state is None or state.startswith("08") or state in _LOST_STATES


def resolve_dsn(explicit: str | None) -> str:
    """--dsn, else ZDM_DSN, else DATABASE_URL, else "" (libpq's own PG* variables)."""
    return explicit or os.environ.get("ZDM_DSN") or os.environ.get("DATABASE_URL") or ""


def redact(dsn: str) -> str:
    """The DSN without its password, for logs and messages."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def scrub(text: str) -> str:
    """Removes passwords from any text that may quote a connection string (error messages)."""
    text = re.sub(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text, flags=re.I)


# A killed zdm must not leave its statement running on the server (a concurrent index build
# would race the resumed run): the server checks every 2 s that the client is still there. The
# setting travels in the startup packet, so it lives and dies with zdm's own session and never
# reaches a pooled server connection another client gets next.
CLIENT_CHECK = "client_connection_check_interval"
CLIENT_CHECK_OPTION = f"-c {CLIENT_CHECK}=2s"


def connect(dsn: str, purpose: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection named `zdm <purpose> (host:pid)`, so blockers and lock holders are identifiable.

    It never sends a session-level SET: the client check rides on the startup `options`, and a
    server too old for it (PostgreSQL 13) or a pooler that rejects `options` (PgBouncer without
    `ignore_startup_parameters = options`) gets a plain connection instead.
    """
    name = f"zdm {purpose} ({socket.gethostname()}:{os.getpid()})"[:63]
    try:
        given = conninfo_to_dict(dsn).get("options")
    except psycopg.ProgrammingError as e:
        raise ConnectionFailed(f"invalid connection string: {scrub(str(e)).strip()}") from None
    options = f"{given} {CLIENT_CHECK_OPTION}" if given else CLIENT_CHECK_OPTION
    try:
        try:
            conn = psycopg.connect(
                dsn,
                autocommit=autocommit,
                application_name=name,
                connect_timeout=10,
                options=options,
            )
        except psycopg.OperationalError as e:
            if not _refused_option(str(e)):
                raise
            conn = psycopg.connect(
                dsn, autocommit=autocommit, application_name=name, connect_timeout=10
            )
    except psycopg.OperationalError as e:
        where = redact(dsn) or "the PG* environment"
        raise ConnectionFailed(f"cannot connect to {where}: {scrub(str(e)).strip()}") from None
    except psycopg.ProgrammingError as e:
        raise ConnectionFailed(f"invalid connection string: {scrub(str(e)).strip()}") from None
    conn.prepare_threshold = None
    return conn


def _refused_option(message: str) -> bool:
    """The server or a pooler refused the startup option, not the connection itself."""
    return "unsupported startup parameter" in message or CLIENT_CHECK in message


def server_version(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.server_version)


def one_round_trip(
    conn: psycopg.Connection[Any], statements: Sequence[bytes], params: Sequence[Any]
) -> tuple[Any, ...] | None:
    """Sends a whole transaction at once, in pipeline mode: one round trip. The next-to-last
    statement takes `params` and its first row comes back; on an error the transaction is
    rolled back and the error raised."""
    try:
        with conn.pipeline():
            for query in statements[:-2]:
                conn.execute(query)
            cur = conn.execute(statements[-2], params)
            conn.execute(statements[-1])
    except BaseException:
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute(b"ROLLBACK")
        raise
    return cur.fetchone()
