"""Connections: where the DSN comes from, how zdm's sessions identify themselves, redaction."""

from __future__ import annotations

import os
import re
import socket
from typing import Any

import psycopg
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


def connect(dsn: str, purpose: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection named `zdm <purpose> (host:pid)`, so blockers and lock holders are identifiable."""
    name = f"zdm {purpose} ({socket.gethostname()}:{os.getpid()})"[:63]
    try:
        conn = psycopg.connect(
            dsn, autocommit=autocommit, application_name=name, connect_timeout=10
        )
    except psycopg.OperationalError as e:
        where = redact(dsn) or "the PG* environment"
        raise ConnectionFailed(f"cannot connect to {where}: {scrub(str(e)).strip()}") from None
    except psycopg.ProgrammingError as e:
        raise ConnectionFailed(f"invalid connection string: {scrub(str(e)).strip()}") from None
    conn.prepare_threshold = None
    if conn.info.server_version >= 140000:
        # A killed zdm must not leave its statement running on the server (a concurrent index
        # build would race the resumed run): the server checks the client is still there.
        conn.execute("SET client_connection_check_interval = '2s'")
        if not autocommit:
            conn.commit()
    return conn


def server_version(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.server_version)
