"""What `--dry-run` prints for a backfill: the statements of one batch, with the facts around."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from zdm.ddl import BackfillJob
from zdm.engine.backfill.catalog import (
    construction_doubt,
    ctid_unsupported,
    estimate_rows,
    find_key,
)
from zdm.engine.backfill.key import Key
from zdm.engine.backfill.mapping import remaining_sql, skipped_triggers
from zdm.engine.backfill.sizing import BatchSizer, batch_lock_timeout_ms
from zdm.engine.backfill.statements import (
    BEGIN,
    COMMIT,
    as_lines,
    batch_transaction,
    checkpoint_sql,
    ctid_batch_sql,
    opening_sets,
    skip_locked_sql,
)
from zdm.engine.session import server_version
from zdm.plan import Settings


def walk_lines(
    jobs: Sequence[BackfillJob],
    conn: psycopg.Connection[Any] | None,
    settings: Settings,
    *,
    state_schema: str = "zdm",
    exists: bool = True,
) -> list[str]:
    """The statements of a walk as the workers run them, with the facts around them."""
    job = jobs[0]
    opts = job.options
    key = find_key(conn, job.table) if conn is not None and exists else None
    shown = key or Key(("<primary key>",))
    sizer = BatchSizer.of(opts)
    sizing = (
        f"batches sized to {opts.batch_time}ms (start {sizer.size}, {opts.min_batch}.."
        f"{opts.max_batch} rows; a batch over {sizer.statement_timeout_ms}ms is cancelled,"
        " halved and retried)"
        if sizer.auto
        else f"batches of {sizer.size} rows"
    )
    lines = [f"-- backfill of {job.table} by {shown.describe()}, {sizing}"]
    if len(jobs) > 1:
        lines.append(f"-- {len(jobs)} backfill steps of {job.table} in one pass over the table")
    if opts.workers > 1:
        lines.append(
            f"-- {opts.workers} workers, each on its own connection and checkpoint row, walk"
            " disjoint key ranges split at keys sampled from the table"
        )
    if conn is not None and not exists:
        lines.append(f"-- {job.table} does not exist yet: no estimate")
    elif conn is not None:
        rows = estimate_rows(conn, job.table)
        batches = -(-rows // sizer.size) if sizer.size else 0
        lines.append(f"-- about {rows:,} rows; about {batches:,} batches at {sizer.size} rows")
        if key is not None and key.ctid:
            why = ctid_unsupported(server_version(conn))
            lines.append(
                f"-- ERROR: {job.table} {why}"
                if why
                else "-- no primary key or unique NOT NULL index: walked by ctid page ranges"
            )
    lines += [f"-- {t}" for t in throttle_lines(opts)]
    if skipped_triggers(jobs):
        lines.append(
            "-- the plan's dual-write trigger would change nothing a batch writes: its WHEN clause"
            " passes the batches over (zdm.skip_triggers); every other write fires it"
        )
    lines.append("-- ROW EXCLUSIVE and row locks only (blocks no reads or writes); each batch:")
    lock_ms, statement_ms = batch_lock_timeout_ms(settings, 1), sizer.statement_timeout_ms
    backfills = sql.Identifier(state_schema, "backfills")
    if shown.ctid:
        batch = [
            BEGIN,
            *opening_sets(lock_ms, statement_ms, jobs),
            ctid_batch_sql(jobs),
            checkpoint_sql(backfills),
            COMMIT,
        ]
    else:
        lines.append("-- its range, its UPDATE and its checkpoint in one statement, sent at once:")
        batch = batch_transaction(
            jobs, shown, backfills, lock_ms, statement_ms, lower=True, upper=opts.workers > 1
        )
    lines += as_lines(batch, conn)
    lines.append(
        f"-- a batch that meets a lock (held over {batch_lock_timeout_ms(settings, 1)}ms) is"
        " retried taking only the rows no one holds, and the walk comes back to the others:"
    )
    lines.append(skip_locked_sql(jobs, shown, lower=True).as_string(conn) + ";")
    lines.append("-- when the walk is over, proof that no row is left:")
    lines.append(remaining_sql(jobs).as_string(conn) + ";")
    if conn is not None and exists and construction_doubt(conn, jobs, probe=False) is None:
        lines.append(
            "-- a row version a batch wrote (its xmin is the batch's transaction) holds what the"
            " batch computed from that same row, and nothing else acts on the batches: it counts"
            " as done, and the predicate is evaluated on every other row (if the expressions are"
            " immutable, which the run checks first):"
        )
        lines.append(
            remaining_sql(jobs, [0]).as_string(conn).replace("'{0}'", "'{<batch xids>}'") + ";"
        )
    return lines


def throttle_lines(options: Any) -> list[str]:
    """The throttles of a backfill step, in words."""
    found = []
    if options.pause:
        found.append(f"pause {options.pause}ms between batches")
    if options.max_replica_lag is not None:
        found.append(f"waits while a standby's replay lags over {options.max_replica_lag}ms")
    if options.throttle_query:
        found.append(f"waits while the throttle_query returns true: {options.throttle_query}")
    if options.pause_on_autovacuum:
        found.append("waits while a vacuum works on the table")
    found.append("`zdm pause` holds it after the current batch; SIGINT/SIGTERM stop it there")
    return found
