"""The database fixtures themselves: a fresh, empty database per test, dropped afterwards."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from zdm.demo.testing import (
    TEST_DSN_ENV,
    EmbeddedServer,
    create_database,
    drop_database,
    server_dsn,
    temporary_database,
)

_seen: dict[str, str] = {}


def _database_exists(admin_dsn: str, name: str) -> bool:
    with psycopg.connect(admin_dsn) as c:
        return (
            c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None
        )


def test_dsn_is_a_fresh_empty_database(dsn: str, conn: psycopg.Connection[Any]) -> None:
    name = conninfo_to_dict(dsn)["dbname"]
    assert isinstance(name, str) and name.startswith("zdm_t_")
    assert conn.info.dbname == name
    assert conn.autocommit
    user_objects = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg_toast%'"
    ).fetchone()
    assert user_objects == (0,)
    conn.execute("CREATE TABLE leftover (id int)")
    _seen["name"] = name


def test_previous_database_was_dropped(pg_admin_dsn: str, dsn: str) -> None:
    previous = _seen.get("name")
    if previous is None:
        pytest.skip("runs after test_dsn_is_a_fresh_empty_database")
    assert previous != conninfo_to_dict(dsn)["dbname"]
    assert not _database_exists(pg_admin_dsn, previous)


def test_server_version(server_version: int, conn: psycopg.Connection[Any]) -> None:
    assert server_version >= 130000
    assert conn.execute("SHOW server_version_num").fetchone() == (str(server_version),)


def test_create_and_drop_database_even_with_open_connections(pg_admin_dsn: str) -> None:
    with temporary_database(pg_admin_dsn, prefix="zdm_tt_") as db:
        name = conninfo_to_dict(db)["dbname"]
        assert isinstance(name, str)
        assert _database_exists(pg_admin_dsn, name)
        lingering = psycopg.connect(db)
        try:
            drop_database(pg_admin_dsn, name)
            assert not _database_exists(pg_admin_dsn, name)
        finally:
            lingering.close()
    drop_database(pg_admin_dsn, name)  # dropping twice is fine


def test_create_database_quotes_its_name(pg_admin_dsn: str) -> None:
    name = 'zdm_t_Odd "name"'
    db = create_database(pg_admin_dsn, name)
    try:
        with psycopg.connect(db) as c:
            assert c.info.dbname == name
    finally:
        drop_database(pg_admin_dsn, name)
    assert not _database_exists(pg_admin_dsn, name)


def test_server_dsn_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_DSN_ENV, "postgresql://someone@example.invalid/db")
    with server_dsn() as got:
        assert got == "postgresql://someone@example.invalid/db"


@pytest.mark.skipif(bool(os.environ.get(TEST_DSN_ENV)), reason="uses the configured server")
def test_embedded_server_applies_settings_and_cleans_up() -> None:
    with EmbeddedServer(fast=True, settings={"work_mem": "8MB"}) as server:
        data_dir = server.data_dir
        with psycopg.connect(server.dsn) as c:
            got = c.execute(
                "SELECT current_setting('fsync'), current_setting('work_mem')"
            ).fetchone()
        assert got == ("off", "8MB")
        assert data_dir.is_dir()
    assert not data_dir.exists()
    assert not data_dir.parent.exists()


@pytest.mark.skipif(bool(os.environ.get(TEST_DSN_ENV)), reason="uses the configured server")
def test_embedded_server_refuses_restart_only_settings() -> None:
    server = EmbeddedServer(settings={"max_connections": "200"})
    with pytest.raises(ValueError, match="max_connections"):
        server.start()
    with pytest.raises(RuntimeError):
        _ = server.dsn
