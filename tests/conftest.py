"""Database fixtures: one server per session, one brand-new database per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from zdm.demo.testing import create_database, drop_database, server_dsn, unique_name


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """Superuser DSN: `ZDM_TEST_DSN`, else an embedded server started once per session."""
    with server_dsn(fast=True) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def server_version(pg_admin_dsn: str) -> int:
    """`server_version_num` of the test server, e.g. 180006."""
    with psycopg.connect(pg_admin_dsn) as conn:
        return conn.info.server_version


@pytest.fixture
def dsn(pg_admin_dsn: str) -> Iterator[str]:
    """DSN of a brand-new, empty database (`zdm_t_<hex>`), dropped after the test."""
    name = unique_name("zdm_t_")
    db_dsn = create_database(pg_admin_dsn, name)
    try:
        yield db_dsn
    finally:
        drop_database(pg_admin_dsn, name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """Autocommit connection to the test's own database."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection
