"""create_index, drop_index: always CONCURRENTLY, recovering an INVALID index left by a failed build."""

from __future__ import annotations

from psycopg import sql

from zdm.ddl import Action, LockMode, Query, Statement, Table, Txn, user_sql
from zdm.ddl import catalog as cat
from zdm.operations.base import Context, Irreversible, forward, inverse
from zdm.plan import CreateIndex, DropIndex

SUE = LockMode.SHARE_UPDATE_EXCLUSIVE


def drop_invalid_index(table: Table, index: Table) -> Txn:
    """Drops a leftover INVALID index of this name; skipped unless one is there."""
    stmt = Statement(
        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(index.ident()),
        SUE,
        table,
        note="only when an INVALID index of this name was left by a failed build",
    )
    return Txn(
        (stmt,),
        f"drop invalid index {index.name}",
        transactional=False,
        skip_if=cat.index_not_invalid(index),
    )


def build_index(
    table: Table,
    index: Table,
    keys: sql.Composable,
    *,
    unique: bool = False,
    method: str = "btree",
    include: list[str] | None = None,
    where: str | None = None,
    skip_if: Query | None = None,
) -> list[Action]:
    """The two units of a concurrent index build: recover, then build (skipped when valid)."""
    parts: list[sql.Composable] = [
        sql.SQL(
            "CREATE UNIQUE INDEX CONCURRENTLY {} ON {}"
            if unique
            else "CREATE INDEX CONCURRENTLY {} ON {}"
        ).format(sql.Identifier(index.name), table.ident())
    ]
    if method != "btree":
        parts.append(sql.SQL(" USING ") + sql.Identifier(method))
    parts.append(sql.SQL(" ({})").format(keys))
    if include:
        parts.append(
            sql.SQL(" INCLUDE ({})").format(sql.SQL(", ").join(map(sql.Identifier, include)))
        )
    if where:
        parts.append(sql.SQL(" WHERE {}").format(user_sql(where)))
    stmt = Statement(
        sql.Composed(parts),
        SUE,
        table,
        scans=True,
        note="scans the table twice; reads and writes continue",
    )
    return [
        drop_invalid_index(table, index),
        Txn(
            (stmt,),
            f"build index {index.name}",
            transactional=False,
            skip_if=skip_if if skip_if is not None else cat.index_valid(index),
        ),
    ]


@forward(CreateIndex)
def create_index(step: CreateIndex, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    keys: sql.Composable
    if step.columns:
        keys = sql.SQL(", ").join(map(sql.Identifier, step.columns))
    else:
        assert step.expression is not None
        keys = sql.SQL("({})").format(user_sql(step.expression))
    return build_index(
        table,
        table.sibling(step.name),
        keys,
        unique=step.unique,
        method=step.method,
        include=step.include,
        where=step.where,
    )


@inverse(CreateIndex)
def undo_create_index(step: CreateIndex, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    return drop_index(DropIndex(name=str(table.sibling(step.name))), ctx)


@forward(DropIndex)
def drop_index(step: DropIndex, ctx: Context) -> list[Action]:
    index = ctx.table(step.name)
    stmt = Statement(
        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(index.ident()),
        SUE,
        None,
        note="waits for running transactions; reads and writes continue",
    )
    return [
        Txn(
            (stmt,),
            f"drop index {index.name}",
            transactional=False,
            skip_if=cat.index_missing(index),
        )
    ]


@inverse(DropIndex)
def undo_drop_index(step: DropIndex, ctx: Context) -> list[Action]:
    raise Irreversible(f"drop_index {step.name}: the plan does not say how it was defined")
