"""The migration history: one row per version of a `zdm migrate` directory that was applied.

A row keeps the SHA-256 of the file as it was applied and the run that applied it; the run's
status tells whether the migration still stands (a `zdm rollback` leaves it `rolled_back`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from zdm.state.statuses import RunStatus
from zdm.state.store import Store


@dataclass(frozen=True)
class MigrationRow:
    version: str
    name: str
    plan: str
    file: str
    sha256: str
    run_id: int | None
    applied_at: datetime
    run_status: str | None
    """Status of the run that applied it; None when that run's record is gone."""

    @property
    def applied(self) -> bool:
        """Still applied: its run completed (and was not rolled back since)."""
        return self.run_status in (None, RunStatus.COMPLETED)

    @property
    def status(self) -> str:
        return "applied" if self.applied else str(self.run_status)


def history_exists(conn: psycopg.Connection[Any], store: Store) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", [store.t("migrations").as_string(conn)]
    ).fetchone()
    return bool(row and row[0])


def read_history(conn: psycopg.Connection[Any], store: Store) -> list[MigrationRow]:
    """Every recorded migration (unordered: versions sort numerically, not as text)."""
    if not history_exists(conn, store):
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                "SELECT m.version, m.name, m.plan, m.file, m.sha256, m.run_id, m.applied_at,"
                " r.status AS run_status FROM {} m LEFT JOIN {} r ON r.id = m.run_id"
            ).format(store.t("migrations"), store.t("runs"))
        )
        return [MigrationRow(**row) for row in cur.fetchall()]


class MigrationFile(Protocol):
    """What the record of an applied migration takes from its file."""

    @property
    def version(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def file(self) -> str: ...
    @property
    def sha256(self) -> str: ...


def record_applied(
    conn: psycopg.Connection[Any],
    store: Store,
    migration: MigrationFile,
    *,
    plan: str,
    run_id: int | None,
) -> None:
    """Records (or re-records, after a rollback and a new run) an applied migration."""
    m = migration
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (version, name, plan, file, sha256, run_id) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (version) DO UPDATE SET name = excluded.name, plan = excluded.plan,"
            " file = excluded.file, sha256 = excluded.sha256, run_id = excluded.run_id,"
            " applied_at = now()"
        ).format(store.t("migrations")),
        [m.version, m.name, plan, m.file, m.sha256, run_id],
    )


def accept_checksum(
    conn: psycopg.Connection[Any], store: Store, version: str, sha256: str, file: str
) -> None:
    """`zdm migrate --force`: the file as it is now becomes the applied one."""
    conn.execute(
        sql.SQL("UPDATE {} SET sha256 = %s, file = %s WHERE version = %s").format(
            store.t("migrations")
        ),
        [sha256, file, version],
    )
