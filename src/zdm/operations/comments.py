"""set_comment: COMMENT ON COLUMN / TABLE, catalog only; its inverse restores the comment it
replaced, as the run recorded it."""

from __future__ import annotations

from psycopg import sql

from zdm.ddl import Action, LockMode, Query, Statement, Table, Txn
from zdm.ddl.catalog import regclass
from zdm.operations.base import Context, forward, inverse, recorded, remembers
from zdm.plan import SetComment


def _target(table: Table, column: str | None) -> sql.Composed:
    if column is None:
        return sql.SQL("TABLE {}").format(table.ident())
    return sql.SQL("COLUMN {}.{}").format(table.ident(), sql.Identifier(column))


@forward(SetComment)
def set_comment(step: SetComment, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    value = sql.NULL if step.comment is None else sql.Literal(step.comment)
    stmt = Statement(
        sql.SQL("COMMENT ON {} IS {}").format(_target(table, step.column), value),
        LockMode.SHARE_UPDATE_EXCLUSIVE,
        table,
        note="catalog only",
    )
    what = f"comment of {step.column}" if step.column else f"comment of {table.name}"
    return [Txn((stmt,), f"set {what}")]


@remembers(SetComment)
def remember_comment(step: SetComment, ctx: Context) -> Query:
    """`{"comment": …}`: the comment the step replaces, null when there is none."""
    table = ctx.table(step.table)
    rel = regclass(table)
    if step.column is None:
        return sql.SQL(
            "SELECT jsonb_build_object('comment', obj_description({}, 'pg_class'))"
        ).format(rel)
    return sql.SQL(
        "SELECT jsonb_build_object('comment', (SELECT col_description(attrelid, attnum)"
        " FROM pg_attribute WHERE attrelid = {} AND attname = {} AND NOT attisdropped))"
    ).format(rel, sql.Literal(step.column))


@inverse(SetComment)
def restore_comment(step: SetComment, ctx: Context) -> list[Action]:
    what = f"set_comment {step.table}" + (f".{step.column}" if step.column else "")
    old = recorded(ctx, what, "the comment it replaced").get("comment")
    return set_comment(step.model_copy(update={"comment": old}), ctx)
