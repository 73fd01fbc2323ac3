"""create_table, drop_table, rename_table."""

from __future__ import annotations

from psycopg import sql

from zdm.ddl import Action, LockMode, Statement, Txn, user_sql
from zdm.ddl import catalog as cat
from zdm.operations.base import Context, Irreversible, forward, inverse
from zdm.plan import ColumnDef, CreateTable, DropTable, RenameTable

AE = LockMode.ACCESS_EXCLUSIVE


def _column(col: ColumnDef, ctx: Context) -> sql.Composed:
    parts: list[sql.Composable] = [sql.Identifier(col.name), user_sql(col.type)]
    if not col.nullable:
        parts.append(sql.SQL("NOT NULL"))
    if col.default is not None:
        parts.append(sql.SQL("DEFAULT {}").format(user_sql(col.default)))
    if col.primary_key:
        parts.append(sql.SQL("PRIMARY KEY"))
    if col.unique:
        parts.append(sql.SQL("UNIQUE"))
    if col.references is not None:
        ref = col.references
        parts.append(
            sql.SQL("REFERENCES {} ({})").format(
                ctx.table(ref.table).ident(), sql.Identifier(ref.column)
            )
        )
        if ref.on_delete:
            parts.append(sql.SQL("ON DELETE ") + user_sql(ref.on_delete.upper()))
    if col.check is not None:
        parts.append(sql.SQL("CHECK ({})").format(user_sql(col.check)))
    return sql.SQL(" ").join(parts)


@forward(CreateTable)
def create_table(step: CreateTable, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    items = [_column(c, ctx) for c in step.columns]
    if step.primary_key:
        items.append(
            sql.SQL("PRIMARY KEY ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, step.primary_key))
            )
        )
    referenced = [c.references.table for c in step.columns if c.references is not None]
    stmt = Statement(
        sql.SQL("CREATE TABLE {} ({})").format(table.ident(), sql.SQL(", ").join(items)),
        # A new table blocks nobody; a foreign key briefly takes SHARE ROW EXCLUSIVE on its target.
        lock=LockMode.SHARE_ROW_EXCLUSIVE if referenced else LockMode.NONE,
        table=ctx.table(referenced[0]) if referenced else None,
        note="new table"
        + (f"; locks {', '.join(referenced)} for its foreign keys" if referenced else ""),
    )
    return [Txn((stmt,), f"create table {table}", skip_if=cat.table_exists(table))]


@inverse(CreateTable)
def undo_create_table(step: CreateTable, ctx: Context) -> list[Action]:
    return drop_table(DropTable(table=step.table), ctx)


@forward(DropTable)
def drop_table(step: DropTable, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    stmt = Statement(
        sql.SQL("DROP TABLE IF EXISTS {}").format(table.ident()), AE, table, note="drops its data"
    )
    return [Txn((stmt,), f"drop table {table}", skip_if=cat.table_missing(table))]


@inverse(DropTable)
def undo_drop_table(step: DropTable, ctx: Context) -> list[Action]:
    raise Irreversible(f"drop_table {step.table} destroyed its data")


@forward(RenameTable)
def rename_table(step: RenameTable, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    new = table.sibling(step.to)
    stmt = Statement(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(table.ident(), sql.Identifier(step.to)),
        AE,
        table,
        note="catalog only",
    )
    done = cat.all_of(cat.table_exists(new), cat.table_missing(table))
    return [Txn((stmt,), f"rename table {table} to {step.to}", skip_if=done)]


@inverse(RenameTable)
def undo_rename_table(step: RenameTable, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    return rename_table(RenameTable(table=f"{table.schema}.{step.to}", to=table.name), ctx)
