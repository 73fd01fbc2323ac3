"""Rows whose mapping fails (a bad cast, a value too long, a constraint): a batch that meets
one is done again with its key range halved until the failing rows are alone, which are
recorded in `mapping_errors` and passed over; at the end of the walk each is tried once more."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors

from zdm.engine.backfill.key import Key
from zdm.engine.backfill.ranges import Batch
from zdm.engine.backfill.statements import batch_sql, row_sql, timeouts_sql, upper_bound_sql
from zdm.engine.policy import StepFailed, lock_timeout_ms, pg_error, retrying
from zdm.state.mapping_errors import BAD_ROWS_SHOWN

if TYPE_CHECKING:
    from zdm.engine.backfill.walk import Backfiller
    from zdm.engine.backfill.worker import Worker

# A batch failing on these is failing on some of its rows' data (class 22: a bad cast, a value
# too long, an invalid regular expression; class 23: a constraint): they are looked for.
DATA_ERRORS = (errors.DataError, errors.IntegrityError)


def isolate(worker: Worker, conn: psycopg.Connection[Any], size: int) -> Batch | None:
    """The batch once more, after it failed on some rows' data: its key range is halved
    until the failing rows are alone (a savepoint each), they are recorded in
    `mapping_errors` and passed over, the others committed with the checkpoint as usual.
    Only a failing batch pays for this."""
    for attempt in retrying(worker.settings, worker.before_retry):
        with attempt:
            n = attempt.retry_state.attempt_number
            bad: list[tuple[list[str], psycopg.Error]] = []
            with conn.transaction():
                worker.open_batch(conn, lock_timeout_ms(worker.settings, n))
                batch = worker.next_range(conn, size)
                if batch is None:
                    return None
                batch.updated = _bisect(worker, conn, batch.lower, batch.upper, batch.walked, bad)
                if len(bad) == batch.walked > 1:
                    # Every row fails: the expression is wrong, not the data.
                    raise StepFailed(f"{worker.bf.label}: {pg_error(bad[0][1])}")
                for key, error in bad:
                    worker.bf.store.record_mapping_error(
                        conn,
                        worker.bf.plan,
                        worker.bf.table_name,
                        dict(zip(worker.key.columns, key, strict=True)),
                        error,
                        "backfill",
                    )
                worker.bf.log.warning(
                    "backfill_bad_rows",
                    worker=worker.range.worker,
                    keys=[k for k, _ in bad],
                    error=pg_error(bad[0][1]) if bad else None,
                )
                worker.checkpoint(conn, batch, size)
            return batch
    raise AssertionError("unreachable")


def _bisect(
    worker: Worker,
    conn: psycopg.Connection[Any],
    lower: list[str] | None,
    upper: list[str],
    rows: int,
    bad: list[tuple[list[str], psycopg.Error]],
) -> int:
    """Rows updated in `(lower, upper]` (`rows` rows), each half in a savepoint; a single
    row that fails is added to `bad`."""
    try:
        with conn.transaction():
            cur = conn.execute(
                batch_sql(worker.bf.jobs, worker.key, lower=lower is not None),
                [*(lower or []), *upper],
            )
        return cur.rowcount
    except DATA_ERRORS as e:
        if rows <= 1:
            bad.append((upper, e))
            return 0
    row = conn.execute(
        upper_bound_sql(worker.bf.table, worker.key, lower=lower is not None, upper=True),
        [*(lower or []), *upper, rows // 2],
    ).fetchone()
    assert row is not None
    middle, first = [str(v) for v in row[:-1]], int(row[-1])
    return _bisect(worker, conn, lower, middle, first, bad) + _bisect(
        worker, conn, middle, upper, rows - first, bad
    )


def retry_bad_rows(bf: Backfiller, key: Key) -> None:
    """Tries again each row a batch passed over because its mapping raised (this run's or
    an earlier one's, maybe fixed since); stops the step, resumable, naming those that
    still fail."""
    table = bf.table_name
    for rec in bf.store.mapping_errors(bf.conn, bf.plan, table=table, source="backfill"):
        if key.ctid or set(rec["row_key"]) != set(key.columns):
            continue
        with bf.conn.transaction():
            bf.conn.execute(timeouts_sql(lock_timeout_ms(bf.ex.settings, 1), 0, bf.jobs))
            bf.store.forget_mapping_error(bf.conn, rec["id"])
            try:
                with bf.conn.transaction():
                    bf.conn.execute(row_sql(bf.jobs, key), [rec["row_key"][c] for c in key.columns])
            except DATA_ERRORS as e:
                bf.store.record_mapping_error(
                    bf.conn, bf.plan, table, rec["row_key"], e, "backfill"
                )
    left = bf.store.mapping_errors(bf.conn, bf.plan, table=table, source="backfill")
    if left:
        first = left[0]
        keys = ", ".join(_show_key(r["row_key"], key.columns) for r in left[:BAD_ROWS_SHOWN]) + (
            ", …" if len(left) > BAD_ROWS_SHOWN else ""
        )
        raise StepFailed(
            f"{bf.label}: {len(left)} row(s) of {table} cannot be mapped and were passed"
            f" over: {keys}; first error: {first['message']} (SQLSTATE {first['sqlstate']})."
            " Fix those rows (or the expression, then `zdm run --force`) and run `zdm run`"
            f" again; `zdm status` lists them ({bf.store.schema}.mapping_errors)"
        )


def _show_key(row_key: dict[str, Any], columns: Sequence[str]) -> str:
    """`id=17`, `(a=1, b=x)`: a recorded row's key as messages show it, in the key's order."""
    order = [c for c in columns if c in row_key] + [c for c in row_key if c not in columns]
    parts = [f"{c}={row_key[c]}" for c in order]
    return parts[0] if len(parts) == 1 else f"({', '.join(parts)})"
