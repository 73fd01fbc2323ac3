"""Which rows a backfill updates and what it writes: predicates, SET lists, the proof's count.

Pure functions of the jobs: the dry-run prints exactly what the run executes.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from zdm.ddl import BackfillJob, Table, user_sql


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


def source_clause(
    jobs: Sequence[BackfillJob],
) -> tuple[sql.Composable, sql.Composable, Table | None]:
    """(FROM clause, join condition, table qualifying the key) of a cross-table backfill."""
    source = jobs[0].source
    if source is None:
        return sql.SQL(""), sql.SQL(""), None
    return (
        sql.SQL(" FROM {}").format(source.table.ident()),
        sql.SQL("({}) AND ").format(user_sql(source.on)),
        jobs[0].table,
    )


def skipped_triggers(jobs: Sequence[BackfillJob]) -> tuple[str, ...]:
    """The dual-write triggers (mapping tokens) a walk's batches pass over: those of its job,
    for a walk of one job only (merged jobs write more columns than each one's check covers)."""
    return jobs[0].skip_triggers if len(jobs) == 1 else ()


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
