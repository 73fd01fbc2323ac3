"""The SQL of a backfill walk: the key it walks, each batch's statements, the split into ranges.

Pure functions of the jobs and the key, so the dry-run prints exactly what the backfill runs;
plus the few catalog reads that choose the key and split the key space between workers.

Every batch is bounded by a key range, `key > last AND key <= upper`, the upper bound found by
an index-only scan limited to the batch size (and to the worker's own `end`), so each UPDATE is
an index range scan. (An UPDATE joined to a LIMIT subquery of keys is planned as a hash join
over the whole table, and the backfill turns quadratic.) A table without a usable key is
walked by `ctid` page ranges, a TID range scan on PostgreSQL 14 and later.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from zdm.ddl import BackfillJob, Table, user_sql
from zdm.ddl.sqltext import identifiers
from zdm.operations.dual_write import row_names, skip_setting, writer_setting

# Keys sampled to split the key space between workers. TABLESAMPLE SYSTEM takes whole pages,
# so a split is as good as the number of pages sampled: 20,000 rows (about 500 pages at 1M
# rows) put it 2% off (one standard error), two workers' shares 4% apart; 200,000 rows read
# about 5,000 pages (0.7% off) in 0.1 to 0.2 s.
SPLIT_SAMPLE_ROWS = 200_000
# TID range scans (`ctid >= '(p,0)' AND ctid < '(q,0)'`) exist from PostgreSQL 14.
CTID_MIN_SERVER = 140000
# `= ANY(constant array)` is a hash probe a row from PostgreSQL 14 (a pass over the array before).
WRITTEN_MIN_SERVER = 140000


INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})


@dataclass(frozen=True)
class Key:
    """What a backfill walks: key columns in index order, or no columns for a `ctid` walk."""

    columns: tuple[str, ...]
    source: str = "primary key"
    # One column of a type whose max() is the last key in ORDER BY (integers, the common
    # primary key): a batch's upper bound is then an aggregate, four times cheaper to compute.
    max_aggregate: bool = False

    @property
    def ctid(self) -> bool:
        return not self.columns

    def refs(self, table: Table | None = None) -> list[sql.Composable]:
        """The key columns, qualified by `table` when another table joins the statement."""
        if table is None:
            return [sql.Identifier(c) for c in self.columns]
        return [sql.Identifier(table.schema, table.name, c) for c in self.columns]

    def row(self, table: Table | None = None) -> sql.Composed:
        return sql.SQL("({})").format(sql.SQL(", ").join(self.refs(table)))

    def params(self) -> sql.Composed:
        return sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(self.columns)))

    def describe(self) -> str:
        if self.ctid:
            return "ctid page ranges"
        return f"{self.source} ({', '.join(self.columns)})"


CTID = Key((), "ctid")


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


# -- predicates and assignments ---------------------------------------------------------------


def default_where(
    mapping: dict[str, str], table: Table | None = None, *, walk: bool = False
) -> str:
    """Rows where some mapped column differs from its expression (rows the trigger fixed are not).

    Columns are qualified by `table` when another table joins the UPDATE and may have them too.
    The `walk`'s form takes every NULL column without evaluating its expression: the batch then
    evaluates it once, in the SET, instead of twice (a new column is NULL on every row not yet
    written). It also takes rows whose expression is NULL too; writing NULL over NULL changes
    nothing, and the proof keeps the exact form.
    """

    def column(c: str) -> str:
        ident = sql.Identifier(c) if table is None else sql.Identifier(table.schema, table.name, c)
        return ident.as_string(None)

    if walk:
        return " OR ".join(
            f"{column(c)} IS NULL OR {column(c)} IS DISTINCT FROM ({e})" for c, e in mapping.items()
        )
    return " OR ".join(f"{column(c)} IS DISTINCT FROM ({e})" for c, e in mapping.items())


def job_where(job: BackfillJob, *, walk: bool = False) -> str:
    """The rows a job updates: its `where`, else the rows whose mapped columns differ."""
    table = job.table if job.source is not None else None
    return job.where or default_where(job.set, table, walk=walk)


def predicate(jobs: Sequence[BackfillJob], *, walk: bool = False) -> sql.Composed:
    """Rows that some job of the walk updates (`walk`), or that the proof counts."""
    if len(jobs) == 1:
        return sql.SQL("({})").format(user_sql(job_where(jobs[0], walk=walk)))
    return sql.SQL("({})").format(
        sql.SQL(" OR ").join(
            sql.SQL("({})").format(user_sql(job_where(j, walk=walk))) for j in jobs
        )
    )


def assignments(jobs: Sequence[BackfillJob]) -> sql.Composed:
    """The SET list; several jobs in one walk each change only the rows their `where` selects."""
    if len(jobs) == 1:
        return sql.SQL(", ").join(
            sql.SQL("{} = ({})").format(sql.Identifier(c), user_sql(e))
            for c, e in jobs[0].set.items()
        )
    parts = []
    for job in jobs:
        for c, e in job.set.items():
            parts.append(
                sql.SQL("{c} = CASE WHEN ({w}) THEN ({e}) ELSE {c} END").format(
                    c=sql.Identifier(c), w=user_sql(job_where(job, walk=True)), e=user_sql(e)
                )
            )
    return sql.SQL(", ").join(parts)


def _source(jobs: Sequence[BackfillJob]) -> tuple[sql.Composable, sql.Composable, Table | None]:
    """(FROM clause, join condition, table qualifying the key) of a cross-table backfill."""
    source = jobs[0].source
    if source is None:
        return sql.SQL(""), sql.SQL(""), None
    return (
        sql.SQL(" FROM {}").format(source.table.ident()),
        sql.SQL("({}) AND ").format(user_sql(source.on)),
        jobs[0].table,
    )


# -- one batch --------------------------------------------------------------------------------


def timeouts_sql(
    lock_timeout_ms: int, statement_timeout_ms: int, jobs: Sequence[BackfillJob] = ()
) -> sql.Composed:
    """Opens a batch's transaction: it gives up on a row lock fast and cannot run long.

    Its commit does not wait for the WAL flush: a batch and its checkpoint commit together, so
    a server crash can lose only the last batches *with* their checkpoints, and the resume does
    them again; waiting for the flush of every batch would cost the walk about a tenth of its
    speed. The dual-write triggers that would change nothing the batch writes are passed over
    (see `skipped_triggers`).
    """
    opener = sql.SQL(
        "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {};"
        " SET LOCAL synchronous_commit = off"
    ).format(sql.Literal(f"{lock_timeout_ms}ms"), sql.Literal(f"{statement_timeout_ms}ms"))
    # The dual-write triggers know the writer: zdm's batch writes exactly what it means to.
    opener += sql.SQL("; ") + writer_setting("backfill")
    skipped = skipped_triggers(jobs)
    if skipped:
        opener += sql.SQL("; ") + skip_setting(skipped)
    return opener


def skipped_triggers(jobs: Sequence[BackfillJob]) -> tuple[str, ...]:
    """The dual-write triggers (mapping tokens) a walk's batches pass over: those of its job,
    for a walk of one job only (merged jobs write more columns than each one's check covers)."""
    return jobs[0].skip_triggers if len(jobs) == 1 else ()


def upper_bound_sql(table: Table, key: Key, *, lower: bool, upper: bool) -> sql.Composed:
    """The last key of the next batch and the batch's row count: an index-only scan.

    Parameters: the last key (when `lower`), the worker's end key (when `upper`), the batch size.
    """
    conds = []
    if lower:
        conds.append(sql.SQL("{} > {}").format(key.row(), key.params()))
    if upper:
        conds.append(sql.SQL("{} <= {}").format(key.row(), key.params()))
    where = sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(conds)) if conds else sql.SQL("")
    if key.max_aggregate:
        (col,) = key.columns
        return sql.SQL(
            "SELECT max({c})::text, count(*) FROM (SELECT {c} FROM {t}{where} ORDER BY {c}"
            " LIMIT %s) s HAVING count(*) > 0"
        ).format(c=sql.Identifier(col), t=table.ident(), where=where)
    # Qualified: a bare name in ORDER BY would mean the ::text output column and sort as text.
    desc = sql.SQL(", ").join(
        sql.SQL("{} DESC").format(sql.Identifier("s", c)) for c in key.columns
    )
    cols = sql.SQL(", ").join(key.refs())
    return sql.SQL(
        "SELECT {texts}, count(*) OVER () FROM (SELECT {cols} FROM {t}{where} ORDER BY {cols}"
        " LIMIT %s) s ORDER BY {desc} LIMIT 1"
    ).format(
        texts=sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier("s", c)) for c in key.columns
        ),
        cols=cols,
        t=table.ident(),
        where=where,
        desc=desc,
    )


def reread_sql(table: Table, key: Key, *, lower: bool) -> sql.Composed:
    """A read of a committed batch's range, a batch later, while its pages are still in memory
    and already written since the last checkpoint: the first reader of the row versions a batch
    wrote sets their hint bits and prunes the old versions, and here that costs no page write
    and no full-page image of its own, as it does when the proof comes to it. An index-only scan
    that visits the heap of every page the batch changed (a TID range scan for a ctid walk).

    Parameters: the batch's lower bound (when `lower`), its upper bound; tids for a ctid walk.
    """
    bounds = _batch_pages(table) if key.ctid else _batch_keys(key, lower=lower)
    return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table.ident(), bounds)


def batch_sql(jobs: Sequence[BackfillJob], key: Key, *, lower: bool) -> sql.Composed:
    """The UPDATE of one batch: the key range, the join, the predicate, the mapping.

    Parameters: the last key (when `lower`), then the batch's upper key.
    """
    return _update(jobs, lambda qualify: _batch_keys(key, lower=lower, qualify=qualify))


def row_sql(jobs: Sequence[BackfillJob], key: Key) -> sql.Composed:
    """The UPDATE of one row, by its key: a row a batch passed over because its mapping raised.

    Parameters: the row's key.
    """
    return _update(
        jobs, lambda qualify: sql.SQL("{} = {}").format(key.row(qualify), key.params())
    )


def _update(
    jobs: Sequence[BackfillJob], rows: Callable[[Table | None], sql.Composable]
) -> sql.Composed:
    """`UPDATE … SET <mapping> [FROM <source>] WHERE [<join> AND] <rows> AND <predicate>`;
    `rows` bounds the rows by key, qualified by the table when a source joins."""
    table = jobs[0].table
    from_, on, qualify = _source(jobs)
    return sql.SQL("UPDATE {t} SET {a}{from_} WHERE {on}{rows} AND {w}").format(
        t=table.ident(),
        a=assignments(jobs),
        from_=from_,
        on=on,
        rows=rows(qualify),
        w=predicate(jobs, walk=True),
    )


def _batch_keys(key: Key, *, lower: bool, qualify: Table | None = None) -> sql.Composed:
    """`key > %s AND key <= %s` (the lower side only when `lower`): a batch's key range."""
    bounds = sql.SQL("{} <= {}").format(key.row(qualify), key.params())
    if lower:
        bounds = sql.SQL("{} > {} AND {}").format(key.row(qualify), key.params(), bounds)
    return bounds


def _batch_pages(table: Table) -> sql.Composed:
    """`ctid >= %s::tid AND ctid < %s::tid`: a ctid batch's page range, a TID range scan."""
    return sql.SQL("{c} >= %s::tid AND {c} < %s::tid").format(
        c=sql.Identifier(table.schema, table.name, "ctid")
    )


def ctid_batch_sql(jobs: Sequence[BackfillJob]) -> sql.Composed:
    """One batch of a ctid walk: the rows of a page range (a TID range scan) and the UPDATE.

    Returns (rows in the pages, rows updated); the count sees the snapshot before the UPDATE.
    Parameters: first page's tid and the tid after the last page, twice.
    """
    table = jobs[0].table
    from_, on, _ = _source(jobs)
    pages = _batch_pages(table)
    return sql.SQL(
        "WITH zdm_batch AS (UPDATE {t} SET {a}{from_} WHERE {on}{pages} AND {w} RETURNING 1)"
        " SELECT (SELECT count(*) FROM {t} WHERE {pages}), (SELECT count(*) FROM zdm_batch)"
    ).format(
        t=table.ident(),
        a=assignments(jobs),
        from_=from_,
        on=on,
        pages=pages,
        w=predicate(jobs, walk=True),
    )


def skip_locked_sql(jobs: Sequence[BackfillJob], key: Key, *, lower: bool) -> sql.Composed:
    """A batch that waits for no application row lock: it locks the rows of its range that no
    one else holds (`FOR NO KEY UPDATE SKIP LOCKED`, a TID scan for the UPDATE) and updates those.

    The retry of a batch that met a row lock, so the walk neither queues behind an application
    transaction nor deadlocks with one; the rows it passed over are those the range holds
    beyond the ones it locked, and the walk comes back to them (`Worker._come_back`).
    Returns (rows in the range, rows locked, rows updated). Parameters: as `batch_sql`, or the
    two page tids of a ctid walk (`lower` is then ignored).
    """
    table = jobs[0].table
    from_, on, qualify = _source(jobs)
    bounds = _batch_pages(table) if key.ctid else _batch_keys(key, lower=lower)
    return sql.SQL(
        "WITH zdm_locked AS (SELECT ctid AS zdm_tid FROM {t} WHERE {bounds}"
        " FOR NO KEY UPDATE SKIP LOCKED),"
        " zdm_batch AS (UPDATE {t} SET {a}{from_} WHERE {on}{tid} = ANY(ARRAY("
        "SELECT zdm_tid FROM zdm_locked)) AND {w} RETURNING 1)"
        " SELECT (SELECT count(*) FROM {t} WHERE {bounds}), (SELECT count(*) FROM zdm_locked),"
        " (SELECT count(*) FROM zdm_batch)"
    ).format(
        t=table.ident(),
        bounds=bounds,
        a=assignments(jobs),
        from_=from_,
        on=on,
        tid=sql.Identifier(table.schema, table.name, "ctid")
        if qualify is not None
        else sql.Identifier("ctid"),
        w=predicate(jobs, walk=True),
    )


def tid(page: int) -> str:
    return f"({page},0)"


def remaining_sql(
    jobs: Sequence[BackfillJob] | BackfillJob, written: Sequence[int] = ()
) -> sql.Composed:
    """How many rows still need the backfill: the proof before the step is marked done.

    A count, not EXISTS: when no row is left (the normal case) both read the whole table, but
    the count gets a parallel scan, while EXISTS, expecting an early match, never does.

    `written` are the transaction ids of the walk's batches, given only when
    `construction_doubt` finds nothing: a row version one of them created holds what its batch
    computed from that very row, so it counts as done without the predicate being evaluated
    again (the predicate's expressions are most of the proof's cost); every other row version,
    whoever wrote it and whenever, is checked. CASE keeps that order.
    """
    jobs = [jobs] if isinstance(jobs, BackfillJob) else list(jobs)
    source = jobs[0].source
    if source is None:
        test: sql.Composable = predicate(jobs)
        if written:
            table = jobs[0].table
            test = sql.SQL("CASE WHEN {x} = ANY({ids}::xid[]) THEN false ELSE {p} END").format(
                x=sql.Identifier(table.schema, table.name, "xmin"),
                ids=sql.Literal("{" + ",".join(str(x) for x in sorted(set(written))) + "}"),
                p=test,
            )
        return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(jobs[0].table.ident(), test)
    return sql.SQL("SELECT count(*) FROM {}, {} WHERE ({}) AND {}").format(
        jobs[0].table.ident(), source.table.ident(), user_sql(source.on), predicate(jobs)
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


# -- sizes and splits -------------------------------------------------------------------------


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


def split_sql(table: Table, key: Key, workers: int, percent: float) -> sql.Composed:
    """The last key of each of `workers` equal slices of a sample of the keys, but the last."""
    cols = sql.SQL(", ").join(key.refs())
    desc = sql.SQL(", ").join(
        sql.SQL("{} DESC").format(sql.Identifier("s", c)) for c in key.columns
    )
    sample = (
        sql.SQL("")
        if percent >= 100
        else sql.SQL(" TABLESAMPLE SYSTEM ({})").format(sql.Literal(round(percent, 6)))
    )
    return sql.SQL(
        "SELECT {texts} FROM (SELECT DISTINCT ON (s.zdm_slice) s.* FROM"
        " (SELECT {cols}, ntile({n}) OVER (ORDER BY {cols}) AS zdm_slice FROM {t}{sample}) s"
        " ORDER BY s.zdm_slice, {desc}) s WHERE s.zdm_slice < {n} ORDER BY s.zdm_slice"
    ).format(
        texts=sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier("s", c)) for c in key.columns
        ),
        cols=cols,
        n=sql.Literal(workers),
        t=table.ident(),
        sample=sample,
        desc=desc,
    )


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


# -- merging several backfills of one table into one walk -------------------------------------


def merge_conflict(walk: Sequence[BackfillJob], job: BackfillJob) -> str | None:
    """Why `job` cannot join the walk of the earlier `walk` jobs (None when it can).

    One UPDATE evaluates every expression over the row as it was before the batch; run one
    after the other, a later step would see what an earlier one wrote. So a later job must not
    set or read a column an earlier one sets; and options, sources must be the same.
    """
    first = walk[0]
    if job.table != first.table:
        return "another table"
    if job.source is not None or first.source is not None:
        return "a cross-table backfill (from) walks alone"
    if _walk_options(job) != _walk_options(first):
        return "different batch or throttle options"
    earlier = {c for j in walk for c in j.set}
    if earlier & set(job.set):
        return f"sets {', '.join(sorted(earlier & set(job.set)))} again"
    text = " ".join([job_where(job), *job.set.values()])
    read = sorted(c for c in earlier if _mentions(text, c))
    if read:
        return f"reads {', '.join(read)}, which an earlier backfill sets"
    return None


def _walk_options(job: BackfillJob) -> dict[str, Any]:
    opts = job.options
    if opts is None or not hasattr(opts, "model_dump"):
        return {}
    dumped: dict[str, Any] = opts.model_dump(exclude={"table", "set", "where", "from_"})
    return dumped


def _mentions(text: str, column: str) -> bool:
    """Whether SQL `text` may name `column` (a word match, quoted or not; errs on yes)."""
    return re.search(rf"(?<![\w$]){re.escape(column)}(?![\w$])", text, re.IGNORECASE) is not None


def quoted_name(conn: psycopg.Connection[Any], table: Table) -> str:
    """`public.users`, `public."Orders"`: the table's name quoted only where it must be."""
    row = conn.execute(
        "SELECT quote_ident(%s) || '.' || quote_ident(%s)", [table.schema, table.name]
    ).fetchone()
    assert row is not None
    return str(row[0])


def _name(conn: psycopg.Connection[Any] | None, table: Table) -> str:
    return table.ident().as_string(conn)
