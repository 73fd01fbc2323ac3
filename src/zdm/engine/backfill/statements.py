"""The statements of a backfill walk: each batch's, the split into ranges. No connection here.

Every batch is bounded by a key range, `key > last AND key <= upper`, the upper bound found by
an index-only scan limited to the batch size (and to the worker's own `end`), so each UPDATE is
an index range scan. (An UPDATE joined to a LIMIT subquery of keys is planned as a hash join
over the whole table, and the backfill turns quadratic.) A table without a usable key is
walked by `ctid` page ranges, a TID range scan on PostgreSQL 14 and later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from zdm.ddl import BackfillJob, Table
from zdm.engine.backfill.key import Key
from zdm.engine.backfill.mapping import assignments, predicate, skipped_triggers, source_clause
from zdm.engine.policy import timeout_sets
from zdm.operations.dual_write import skip_setting, writer_setting


def timeouts_sql(
    lock_timeout_ms: int, statement_timeout_ms: int, jobs: Sequence[BackfillJob] = ()
) -> sql.Composed:
    """The statements of `opening_sets`, in one string (one round trip)."""
    return sql.SQL("; ").join(opening_sets(lock_timeout_ms, statement_timeout_ms, jobs))


def opening_sets(
    lock_timeout_ms: int, statement_timeout_ms: int, jobs: Sequence[BackfillJob] = ()
) -> list[sql.Composable]:
    """Open a batch's transaction: it gives up on a row lock fast and cannot run long (the
    lock policy's SETs).

    Its commit does not wait for the WAL flush: a batch and its checkpoint commit together, so
    a server crash can lose only the last batches *with* their checkpoints, and the resume does
    them again; waiting for the flush of every batch would cost the walk about a tenth of its
    speed. The dual-write triggers that would change nothing the batch writes are passed over
    (see `skipped_triggers`).
    """
    sets: list[sql.Composable] = [
        *timeout_sets(f"{lock_timeout_ms}ms", f"{statement_timeout_ms}ms", local=True),
        sql.SQL("SET LOCAL synchronous_commit = off"),
        # The dual-write triggers know the writer: zdm's batch writes exactly what it means to.
        writer_setting("backfill"),
    ]
    skipped = skipped_triggers(jobs)
    if skipped:
        sets.append(skip_setting(skipped))
    return sets


BEGIN = sql.SQL("BEGIN")
COMMIT = sql.SQL("COMMIT")


def batch_transaction(
    jobs: Sequence[BackfillJob],
    key: Key,
    backfills: sql.Identifier,
    lock_timeout_ms: int,
    statement_timeout_ms: int,
    *,
    lower: bool,
    upper: bool,
) -> list[sql.Composable]:
    """A key walk's batch as its worker sends it, all at once: BEGIN, the opening SETs, the
    batch with its checkpoint (`batch_and_checkpoint_sql`), COMMIT."""
    return [
        BEGIN,
        *opening_sets(lock_timeout_ms, statement_timeout_ms, jobs),
        batch_and_checkpoint_sql(jobs, key, backfills, lower=lower, upper=upper),
        COMMIT,
    ]


def reread_transaction(
    table: Table, key: Key, lock_timeout_ms: int, statement_timeout_ms: int, *, lower: bool
) -> list[sql.Composable]:
    """The read a batch later (`reread_sql`) as a worker sends it, all at once."""
    return [
        BEGIN,
        *opening_sets(lock_timeout_ms, statement_timeout_ms),
        reread_sql(table, key, lower=lower),
        COMMIT,
    ]


def as_lines(
    statements: Sequence[sql.Composable], conn: psycopg.Connection[Any] | None
) -> list[str]:
    """A transaction's statements as the dry-run prints them and the workers log them: one a
    line, the SETs that open it together on one."""
    lines: list[str] = []
    for query in statements:
        text = query.as_string(conn) + ";"
        if lines and text.startswith("SET ") and lines[-1].startswith("SET "):
            lines[-1] += " " + text
        else:
            lines.append(text)
    return lines


def upper_bound_sql(table: Table, key: Key, *, lower: bool, upper: bool) -> sql.Composed:
    """The last key of the next batch and the batch's row count: an index-only scan.

    Parameters: the last key (when `lower`), the worker's end key (when `upper`), the batch size.
    """
    return _next_keys(table, key, lower=lower, upper=upper, typed=False)


def _next_keys(table: Table, key: Key, *, lower: bool, upper: bool, typed: bool) -> sql.Composed:
    """`upper_bound_sql`; `typed`: the key columns under their own names and their type, and
    the row count as `zdm_rows` (the range of `batch_and_checkpoint_sql`)."""
    conds = []
    if lower:
        conds.append(sql.SQL("{} > {}").format(key.row(), key.params()))
    if upper:
        conds.append(sql.SQL("{} <= {}").format(key.row(), key.params()))
    where = sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(conds)) if conds else sql.SQL("")
    rows = sql.SQL(" AS zdm_rows" if typed else "")
    if key.max_aggregate:
        (col,) = key.columns
        return sql.SQL(
            "SELECT max({c}){out}, count(*){rows} FROM (SELECT {c} FROM {t}{where} ORDER BY {c}"
            " LIMIT %s) s HAVING count(*) > 0"
        ).format(
            c=sql.Identifier(col),
            out=sql.SQL(" AS {}").format(sql.Identifier(col)) if typed else sql.SQL("::text"),
            rows=rows,
            t=table.ident(),
            where=where,
        )
    # Qualified: a bare name in ORDER BY would mean the ::text output column and sort as text.
    desc = sql.SQL(", ").join(
        sql.SQL("{} DESC").format(sql.Identifier("s", c)) for c in key.columns
    )
    cols = sql.SQL(", ").join(key.refs())
    return sql.SQL(
        "SELECT {outs}, count(*) OVER (){rows} FROM (SELECT {cols} FROM {t}{where} ORDER BY {cols}"
        " LIMIT %s) s ORDER BY {desc} LIMIT 1"
    ).format(
        outs=sql.SQL(", ").join(
            sql.SQL("{}{}").format(sql.Identifier("s", c), sql.SQL("" if typed else "::text"))
            for c in key.columns
        ),
        rows=rows,
        cols=cols,
        t=table.ident(),
        where=where,
        desc=desc,
    )


def checkpoint_sql(backfills: sql.Identifier) -> sql.Composed:
    """A batch's checkpoint, in the batch's own transaction (a ctid batch's, a retried one's).

    Parameters: the last key (JSON), rows walked, rows updated, the batch size, the rate, the
    run id, the step ordinals, the worker, the partition ('' for a table's own walk).
    """
    return sql.SQL(
        "UPDATE {} SET last_key = %s, rows_done = rows_done + %s,"
        " rows_updated = rows_updated + %s, batch_size = %s, batches = batches + 1,"
        " rate = %s, updated_at = clock_timestamp()"
        " WHERE run_id = %s AND ordinal = ANY(%s) AND worker = %s AND part = %s"
    ).format(backfills)


def batch_and_checkpoint_sql(
    jobs: Sequence[BackfillJob], key: Key, backfills: sql.Identifier, *, lower: bool, upper: bool
) -> sql.Composed:
    """A batch in one statement: the range of the next keys (`upper_bound_sql`), the UPDATE of
    its rows (`batch_sql`, bounded by that range) and the worker's checkpoint (`checkpoint_sql`).

    Returns the batch's upper key (as text), the rows in its range, the rows updated and the
    transaction id; no row when the worker's range is walked. Parameters: the last key (when
    `lower`), the worker's end key (when `upper`), the batch size, the last key again (when
    `lower`); then the batch size, the rate, the run id, the step ordinals, the worker, the
    partition ('' for a table's own walk).
    """
    texts = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in key.columns)
    upper_key = sql.SQL("({})").format(
        sql.SQL(", ").join(
            sql.SQL("(SELECT {} FROM zdm_range)").format(sql.Identifier(c)) for c in key.columns
        )
    )

    def rows(qualify: Table | None) -> sql.Composed:
        bounds = sql.SQL("{} <= {}").format(key.row(qualify), upper_key)
        if lower:
            bounds = sql.SQL("{} > {} AND {}").format(key.row(qualify), key.params(), bounds)
        return bounds

    return sql.SQL(
        "WITH zdm_range AS ({range}), zdm_batch AS ({update} RETURNING 1),"
        " zdm_checkpoint AS (UPDATE {b} SET last_key = (SELECT to_jsonb(ARRAY[{texts}])"
        " FROM zdm_range), rows_done = rows_done + (SELECT zdm_rows FROM zdm_range),"
        " rows_updated = rows_updated + (SELECT count(*) FROM zdm_batch), batch_size = %s,"
        " batches = batches + 1, rate = %s, updated_at = clock_timestamp()"
        " WHERE run_id = %s AND ordinal = ANY(%s) AND worker = %s AND part = %s"
        " AND EXISTS (SELECT FROM zdm_range))"
        " SELECT {texts}, zdm_rows, (SELECT count(*) FROM zdm_batch),"
        " mod(txid_current(), 4294967296) FROM zdm_range"
    ).format(
        range=_next_keys(jobs[0].table, key, lower=lower, upper=upper, typed=True),
        update=_update(jobs, rows),
        b=backfills,
        texts=texts,
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
    return _update(jobs, lambda qualify: sql.SQL("{} = {}").format(key.row(qualify), key.params()))


def _update(
    jobs: Sequence[BackfillJob], rows: Callable[[Table | None], sql.Composable]
) -> sql.Composed:
    """`UPDATE … SET <mapping> [FROM <source>] WHERE [<join> AND] <rows> AND <predicate>`;
    `rows` bounds the rows by key, qualified by the table when a source joins."""
    table = jobs[0].table
    from_, on, qualify = source_clause(jobs)
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
    from_, on, _ = source_clause(jobs)
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
    from_, on, qualify = source_clause(jobs)
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
