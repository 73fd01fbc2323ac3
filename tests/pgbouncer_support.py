"""A real PgBouncer in front of the test server, on a free loopback port, for pooler tests.

The binary comes from Debian's `pgbouncer` package (.ci/run installs it); without it the tests
that need one skip and say why. PgBouncer will not run as root, so as root it is started with
`-u` as an unprivileged user that can read its own temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

UNPRIVILEGED_USERS = ("postgres", "embedded_postgres", "nobody")


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgBouncer:
    """PgBouncer in `mode` (session, transaction) with `pool_size` server connections per pool.

    `dsn(target)` is the DSN of the test database `target` as seen through the pooler.
    """

    def __init__(
        self,
        server_dsn: str,
        *,
        mode: str = "transaction",
        pool_size: int = 1,
        ignore_startup_parameters: str = "extra_float_digits",
        server_reset_query: str | None = None,
    ) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (apt-get install -y pgbouncer)")
        self.binary = binary
        self.server = conninfo_to_dict(server_dsn)
        self.mode = mode
        self.pool_size = pool_size
        self.ignore = ignore_startup_parameters
        self.reset_query = server_reset_query
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.dir = Path(tempfile.mkdtemp(prefix="zdm-pgbouncer-"))
        self.dir.chmod(0o777)
        self.port = free_port()
        user = str(self.server.get("user") or "postgres")
        host = str(self.server.get("host") or "/tmp")
        server_port = str(self.server.get("port") or "5432")
        (self.dir / "userlist.txt").write_text(f'"{user}" ""\n')
        reset = "" if self.reset_query is None else f"server_reset_query = {self.reset_query}\n"
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={server_port} user={user}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.dir}\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            f"pool_mode = {self.mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 200\n"
            f"ignore_startup_parameters = {self.ignore}\n"
            f"{reset}"
            "server_lifetime = 3600\n"
            "query_wait_timeout = 60\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
        )
        for f in self.dir.iterdir():
            f.chmod(0o666)
        cmd = [self.binary, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            cmd[1:1] = ["-u", _unprivileged_user(host)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"pgbouncer exited at start: {err.strip() or self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on port {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.dir / "pgbouncer.log" if self.dir else None
        return path.read_text() if path and path.exists() else ""

    def dsn(self, target_dsn: str) -> str:
        """The DSN of the database of `target_dsn`, reached through this pooler."""
        params = conninfo_to_dict(target_dsn)
        return make_conninfo(
            host="127.0.0.1",
            port=str(self.port),
            dbname=str(params.get("dbname") or "postgres"),
            user=str(params.get("user") or self.server.get("user") or "postgres"),
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _unprivileged_user(host: str) -> str:
    """The owner of the server's socket directory (an embedded server's data directory is
    private to it), else the first unprivileged user that exists."""
    if host.startswith("/"):
        with contextlib.suppress(OSError, KeyError):
            owner = pwd.getpwuid(os.stat(host).st_uid).pw_name
            if owner != "root":
                return owner
    for name in UNPRIVILEGED_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("pgbouncer will not run as root and no unprivileged user exists")


def fresh_client_settings(
    dsn: str, names: tuple[str, ...], clients: int = 1, *, hold: bool = True
) -> list[dict[str, str | None]]:
    """What brand-new clients (no startup options) see for `names`, one dict per client: a leak
    shows here. With `hold`, the clients hold a transaction open each until all have read, so
    through a pool of `clients` server connections every one of them is read (statement pooling
    allows no transaction: there each reads in autocommit)."""
    conns = [psycopg.connect(dsn, autocommit=not hold) for _ in range(clients)]
    try:
        seen = []
        for conn in conns:
            values: dict[str, str | None] = {}
            for name in names:
                row = conn.execute("SELECT current_setting(%s, true)", [name]).fetchone()
                values[name] = row[0] if row else None
            seen.append(values)
        return seen
    finally:
        for conn in conns:
            conn.rollback()
            conn.close()
