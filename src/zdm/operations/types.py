"""set_type: a column's type changed where PostgreSQL needs no rewrite (varchar widened or made
text), catalog only. The type it replaces is recorded before the first attempt, so rollback
changes it back, and a plan expanded again after the change (a resume) asks for the same step.
"""

from __future__ import annotations

from psycopg import sql

from zdm.ddl import Action, Check, LockMode, Query, Statement, Table, Txn, user_sql
from zdm.ddl import catalog as cat
from zdm.operations.base import Context, forward, inverse, recorded, remembers
from zdm.plan import SetType
from zdm.plan.steps import varchar_length

AE = LockMode.ACCESS_EXCLUSIVE


def _column_type(table: Table, column: str) -> sql.Composed:
    return sql.SQL(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = {rel}"
        " AND attname = {col} AND NOT attisdropped"
    ).format(rel=cat.regclass(table), col=sql.Literal(column))


def no_rewrite(table: Table, column: str, new_type: str) -> Query:
    """NULL when changing the column to `new_type` rewrites nothing, else why it would: the
    column is varchar (or text, to text) no longer than the new length."""
    length = varchar_length(new_type)
    ok: sql.Composable
    if length == "text":
        ok = sql.SQL("a.atttypid IN ('varchar'::regtype, 'text'::regtype)")
    elif length is None:
        ok = sql.SQL("a.atttypid = 'varchar'::regtype")
    else:
        ok = sql.SQL(
            "a.atttypid = 'varchar'::regtype AND a.atttypmod <> -1 AND a.atttypmod - 4 <= {}"
        ).format(sql.Literal(length))
    return sql.SQL(
        "SELECT CASE WHEN {ok} THEN NULL ELSE format('column %I is %s: changing it to %s would "
        "rewrite the table under ACCESS EXCLUSIVE (use alter_column)', a.attname, "
        "format_type(a.atttypid, a.atttypmod), {new}) END FROM pg_attribute a "
        "WHERE a.attrelid = {rel} AND a.attname = {col} AND NOT a.attisdropped"
    ).format(ok=ok, new=sql.Literal(new_type), rel=cat.regclass(table), col=sql.Literal(column))


def _retype(table: Table, column: str, new_type: str, note: str) -> Txn:
    stmt = Statement(
        sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
            table.ident(), sql.Identifier(column), user_sql(new_type)
        ),
        AE,
        table,
        note=note,
    )
    return Txn((stmt,), f"change the type of {column} to {new_type}")


@forward(SetType)
def set_type(step: SetType, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    return [
        Check(
            no_rewrite(table, step.column, step.type),
            None,
            f"the type change of {step.column} needs no rewrite",
        ),
        _retype(table, step.column, step.type, "catalog only: no rewrite"),
    ]


@remembers(SetType)
def remember_type(step: SetType, ctx: Context) -> Query:
    return sql.SQL("SELECT jsonb_build_object('type', ({}))").format(
        _column_type(ctx.table(step.table), step.column)
    )


@inverse(SetType)
def restore_type(step: SetType, ctx: Context) -> list[Action]:
    """The type the column had, as the run recorded it; a shorter varchar checks every value
    (a scan under ACCESS EXCLUSIVE)."""
    old = recorded(ctx, f"set_type {step.table}.{step.column}", "the type it replaced")["type"]
    if old is None:
        return []
    # SQL text that format_type gave and the run recorded in zdm's state: trusted as the plan is.
    return [_retype(ctx.table(step.table), step.column, old, "scans to check the old length")]
