"""backfill, verify, sql: the steps whose work is data or the author's own SQL."""

from __future__ import annotations

from pathlib import Path

from zdm.ddl import (
    Action,
    BackfillJob,
    BackfillSource,
    Check,
    LockMode,
    Statement,
    Txn,
    user_sql,
)
from zdm.ddl.sqltext import split_statements, without_own_transaction
from zdm.operations.base import Context, Irreversible, forward, inverse
from zdm.operations.dual_write import mapping_token, redundant_for
from zdm.plan import Backfill, Sql, Verify


def backfill_mapping(step: Backfill, ctx: Context) -> dict[str, str]:
    """`set`, defaulting to the mapping of the table's dual_write."""
    if step.set:
        return dict(step.set)
    table = ctx.table(step.table)
    mapping: dict[str, str] = {}
    for dw in ctx.dual_writes(table):
        mapping.update(dw.set)
    return mapping


def redundant_triggers(step: Backfill, mapping: dict[str, str], ctx: Context) -> tuple[str, ...]:
    """The mappings (tokens) of the plan's dual-write triggers that this backfill's batches need
    not fire: they would change nothing the batch does not already write. Only for a batch that
    updates exactly the rows its mapping differs on, from the row alone (no `where`, no `from`).
    A trigger on the table with another body (another plan's, of the same name) has another
    token, and fires."""
    if step.where is not None or step.from_ is not None:
        return ()
    table = ctx.table(step.table)
    return tuple(
        mapping_token(dw.set, dw.reverse)
        for dw in ctx.dual_writes(table)
        if redundant_for(dw, mapping, table)
    )


@forward(Backfill)
def backfill(step: Backfill, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    mapping = backfill_mapping(step, ctx)
    return [
        BackfillJob(
            table=table,
            set=mapping,
            where=step.where,
            options=step,
            source=BackfillSource(ctx.table(step.from_.table), step.from_.on)
            if step.from_ is not None
            else None,
            label=f"backfill {table}",
            skip_triggers=redundant_triggers(step, mapping, ctx),
        )
    ]


@inverse(Backfill)
def undo_backfill(step: Backfill, ctx: Context) -> list[Action]:
    return []  # the values live in columns that earlier steps' inverses drop


@forward(Verify)
def verify(step: Verify, ctx: Context) -> list[Action]:
    return [Check(user_sql(step.sql), step.expect, step.name or "verify")]


@inverse(Verify)
def undo_verify(step: Verify, ctx: Context) -> list[Action]:
    return []


def _sql_text(inline: str | None, file: str | None, base: Path | None) -> str | None:
    if inline is not None:
        return inline
    if file is None:
        return None
    return ((base or Path.cwd()) / file).read_text()


def _raw(text: str, step: Sql, label: str, ctx: Context) -> list[Action]:
    """The step's SQL: one string in the step's transaction or, outside a transaction, a unit for
    each statement (a multi-statement string would run as one implicit transaction)."""
    # A transactional step runs in a transaction of its own: the file's BEGIN/COMMIT go.
    texts = [without_own_transaction(text)] if step.transactional else split_statements(text)
    lock = LockMode.parse(step.lock) if step.lock else LockMode.ACCESS_EXCLUSIVE
    note = (
        f"raw SQL; declared lock {lock.sql_name}"
        if step.lock
        else "raw SQL; lock not declared, treated as ACCESS EXCLUSIVE"
    )
    tables = [ctx.table(t) for t in step.tables]
    stmts = [
        Statement(
            user_sql(t), lock, tables[0] if tables else None, note=note, also=tuple(tables[1:])
        )
        for t in texts
    ]
    if step.transactional or len(stmts) == 1:
        return [Txn(tuple(stmts), label, transactional=step.transactional)]
    return [
        Txn((stmt,), f"{label} ({i}/{len(stmts)})", transactional=False)
        for i, stmt in enumerate(stmts, start=1)
    ]


@forward(Sql)
def raw_sql(step: Sql, ctx: Context) -> list[Action]:
    text = _sql_text(step.up, step.up_file, ctx.base_dir)
    assert text is not None
    return _raw(text, step, "sql", ctx)


@inverse(Sql)
def undo_raw_sql(step: Sql, ctx: Context) -> list[Action]:
    text = _sql_text(step.down, step.down_file, ctx.base_dir)
    if text is None:
        raise Irreversible("this sql step has no down")
    return _raw(text, step, "sql down", ctx)
