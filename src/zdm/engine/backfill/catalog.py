"""What a backfill asks the catalog: the key to walk, the table's size, the key split, and
whether the proof may take the walk's own row versions as done."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from zdm.ddl import BackfillJob, Table, user_sql
from zdm.ddl.sqltext import identifiers
from zdm.engine.backfill.key import CTID, INTEGER_TYPES, Key
from zdm.engine.backfill.mapping import skipped_triggers
from zdm.engine.backfill.statements import split_sql
from zdm.operations.dual_write import row_names

# Keys sampled to split the key space between workers. TABLESAMPLE SYSTEM takes whole pages,
# so a split is as good as the number of pages sampled: 20,000 rows (about 500 pages at 1M
# rows) put it 2% off (one standard error), two workers' shares 4% apart; 200,000 rows read
# about 5,000 pages (0.7% off) in 0.1 to 0.2 s.
SPLIT_SAMPLE_ROWS = 200_000
# TID range scans (`ctid >= '(p,0)' AND ctid < '(q,0)'`) exist from PostgreSQL 14.
CTID_MIN_SERVER = 140000
# `= ANY(constant array)` is a hash probe a row from PostgreSQL 14 (a pass over the array before).
WRITTEN_MIN_SERVER = 140000


def find_key(conn: psycopg.Connection[Any], table: Table) -> Key | None:
    """The key to walk: the primary key, else the narrowest unique btree index on NOT NULL
    plain columns; CTID when there is none; None when the table does not exist."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [_name(conn, table)]).fetchone()
    if not (exists and exists[0]):
        return None
    row = conn.execute(
        "SELECT c.relname, i.indisprimary, array_agg(a.attname::text ORDER BY k.n),"
        " array_agg(a.atttypid::regtype::text ORDER BY k.n)"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_am am ON am.oid = c.relam"
        " CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)"
        " LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indisvalid AND i.indisready"
        " AND i.indpred IS NULL AND i.indexprs IS NULL AND am.amname = 'btree'"
        " AND k.n <= i.indnkeyatts AND 0 = ALL (i.indoption::int2[])"
        " GROUP BY c.relname, i.indisprimary"
        " HAVING bool_and(coalesce(a.attnotnull, false))"
        " ORDER BY i.indisprimary DESC, count(*), c.relname LIMIT 1",
        [_name(conn, table)],
    ).fetchone()
    if row is None:
        return CTID
    name, primary, columns, types = row
    return Key(
        tuple(columns),
        f"primary key {name}" if primary else f"unique index {name}",
        max_aggregate=len(types) == 1 and types[0] in INTEGER_TYPES,
    )


def primary_key(conn: psycopg.Connection[Any], table: Table) -> Key | None:
    """The key a backfill of `table` walks (see `find_key`); None for a missing table."""
    return find_key(conn, table)


def ctid_unsupported(server_version: int) -> str | None:
    """Why a ctid walk cannot run on this server, or None."""
    if server_version >= CTID_MIN_SERVER:
        return None
    return (
        "has no primary key or unique NOT NULL index, and walking it by ctid page ranges needs"
        " PostgreSQL 14 or later (TID range scans); add a primary key first"
    )


def construction_doubt(
    conn: psycopg.Connection[Any], jobs: Sequence[BackfillJob], *, probe: bool = True
) -> str | None:
    """Why the proof must evaluate the predicate on the rows the walk wrote too; None if not.

    A batch sets each column to its expression computed over the row it updates. The row
    version it leaves holds what the predicate would compute again only when:
    - the predicate is the mapping's own: no `where`, no `from` table;
    - no expression reads what the new row version has anew: a column the walk writes, the
      whole row, a system column, a stored generated column (`row_names`: any word counts, a
      doubt says no);
    - nothing else acts on the batch's UPDATE: no trigger fires on it but the dual-write
      triggers it passes over, the table has no rules, no child tables, no foreign key on
      itself that cascades an update;
    - every expression is immutable: a STABLE function or a subquery may read what changes
      after the batch (PostgreSQL's own test, an index expression on a scratch copy, says so;
      not without `probe`, for a read-only dry-run);
    - the server hashes `= ANY` (14 and later), so the list of batches costs one probe a row.
    """
    if conn.info.server_version < WRITTEN_MIN_SERVER:
        return "PostgreSQL 13 and older search the list of batches row by row"
    table = jobs[0].table
    for job in jobs:
        if job.where is not None:
            return f"{job.label} has its own `where`"
        if job.source is not None:
            return f"{job.label} takes its values from {job.source.table}"
    name = _name(conn, table)
    # What the new row version has anew: the columns written, the whole row, system columns
    # of the version, and the stored generated columns (computed again from the new row).
    changed = row_names([c for job in jobs for c in job.set], table)
    changed |= {"ctid", "xmin", "xmax", "cmin", "cmax"}
    changed |= {
        r[0].lower()
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s)"
            " AND attgenerated <> '' AND NOT attisdropped",
            [name],
        )
    }
    for job in jobs:
        for column, expression in job.set.items():
            if identifiers(expression) & changed:
                return f"the expression of {column} may read a column the walk writes"
    found = conn.execute(
        "SELECT relkind::text, relhasrules, relhassubclass, EXISTS (SELECT FROM pg_constraint"
        " WHERE contype = 'f' AND conrelid = c.oid AND confrelid = c.oid"
        " AND confupdtype NOT IN ('a', 'r')) FROM pg_class c WHERE c.oid = to_regclass(%s)",
        [name],
    ).fetchone()
    if found is None:
        return f"{table} does not exist"
    if found[:3] != ("r", False, False):
        return f"{table} is partitioned, has child tables or has rules"
    if found[3]:
        return f"a foreign key of {table} on itself acts on update"
    tokens = skipped_triggers(jobs)
    # Row or statement triggers alike: tgtype bit 16 is "fires on UPDATE".
    for trigger, definition in conn.execute(
        "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = to_regclass(%s)"
        " AND NOT tgisinternal AND tgenabled <> 'D' AND tgtype & 16 = 16 ORDER BY tgname",
        [name],
    ):
        if not any(token in definition for token in tokens):
            return f"trigger {trigger} fires on the batches"
    return _mutable(conn, jobs) if probe else None


def _mutable(conn: psycopg.Connection[Any], jobs: Sequence[BackfillJob]) -> str | None:
    """Why some expression is not immutable, by PostgreSQL's own test: an index expression
    must be (on a scratch copy of the table's columns, made and dropped in one transaction)."""
    what = "a scratch copy of the table"
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL lock_timeout = '1s'")
            conn.execute(
                sql.SQL("CREATE TEMP TABLE zdm_probe (LIKE {}) ON COMMIT DROP").format(
                    jobs[0].table.ident()
                )
            )
            for job in jobs:
                for column, expression in job.set.items():
                    what = f"the expression of {column}"
                    conn.execute(
                        sql.SQL("CREATE INDEX ON pg_temp.zdm_probe ((({}) IS NULL))").format(
                            user_sql(expression)
                        )
                    )
    except psycopg.Error as e:
        return f"{what}: {e.diag.message_primary or type(e).__name__}"
    return None


def estimate_rows(conn: psycopg.Connection[Any], table: Table) -> int:
    """The planner's row count of `table`; a count(*) when it was never analyzed."""
    row = conn.execute(
        "SELECT CASE WHEN reltuples < 0 THEN NULL ELSE reltuples::bigint END FROM pg_class"
        " WHERE oid = to_regclass(%s)",
        [_name(conn, table)],
    ).fetchone()
    if row and row[0] is not None and (row[0] > 0 or _pages(conn, table) == 0):
        return int(row[0])
    counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident())).fetchone()
    return int(counted[0]) if counted else 0


def _pages(conn: psycopg.Connection[Any], table: Table) -> int:
    row = conn.execute(
        "SELECT pg_relation_size(to_regclass(%s)) / current_setting('block_size')::int",
        [_name(conn, table)],
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def table_pages(conn: psycopg.Connection[Any], table: Table) -> int:
    """The table's size in pages now: where a ctid walk ends."""
    return _pages(conn, table)


def split_keys(
    conn: psycopg.Connection[Any], table: Table, key: Key, workers: int, rows: int
) -> list[list[str]]:
    """Boundaries between `workers` key ranges of about equal row counts, from a key sample.

    Range i is (boundary[i-1], boundary[i]]; the first starts at the table's start and the last
    runs to its end, so keys inserted later are covered. Fewer boundaries come back when the
    table has fewer distinct keys than workers.
    """
    if workers <= 1:
        return []
    percent = 100.0 if rows <= SPLIT_SAMPLE_ROWS else 100.0 * SPLIT_SAMPLE_ROWS / rows
    found = conn.execute(split_sql(table, key, workers, percent)).fetchall()
    bounds: list[list[str]] = []
    for r in found:
        values = [str(v) for v in r]
        if not bounds or values != bounds[-1]:
            bounds.append(values)
    return bounds


def quoted_name(conn: psycopg.Connection[Any], table: Table) -> str:
    """`public.users`, `public."Orders"`: the table's name quoted only where it must be."""
    row = conn.execute(
        "SELECT quote_ident(%s) || '.' || quote_ident(%s)", [table.schema, table.name]
    ).fetchone()
    assert row is not None
    return str(row[0])


def _name(conn: psycopg.Connection[Any] | None, table: Table) -> str:
    return table.ident().as_string(conn)
