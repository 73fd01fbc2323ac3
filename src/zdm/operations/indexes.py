"""create_index, drop_index: always CONCURRENTLY, recovering an INVALID index left by a failed build.

drop_index remembers the index's definition and settings before its first attempt; its inverse
builds the index again from that record, concurrently, and restores the settings.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from zdm.ddl import Action, Check, LockMode, Query, Statement, Table, Txn, Wait, user_sql
from zdm.ddl import catalog as cat
from zdm.operations.base import Context, Irreversible, forward, inverse, recorded, remembers
from zdm.plan import CreateIndex, DropIndex, IndexColumn

SUE = LockMode.SHARE_UPDATE_EXCLUSIVE
AE = LockMode.ACCESS_EXCLUSIVE


def drop_invalid_index(table: Table, index: Table) -> Txn:
    """Drops a leftover INVALID index of this name; skipped unless one is there.

    An index is INVALID while it is being built, too: a killed run's build may still be going on
    the server. That one is waited for first; it may still finish, and then nothing is dropped.
    """
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
        wait=Wait(
            cat.index_being_built(index),
            f"another session builds index {index.name}",
        ),
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
    storage: str | None = None,
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
    if storage:
        parts.append(sql.SQL(" WITH ({})").format(user_sql(storage)))
    if where:
        parts.append(sql.SQL(" WHERE {}").format(user_sql(where)))
    return concurrent_build(table, index, sql.Composed(parts), skip_if)


def concurrent_build(
    table: Table, index: Table, create: Query, skip_if: Query | None = None
) -> list[Action]:
    """A `CREATE INDEX CONCURRENTLY` statement as its two units: recover, then build (skipped
    once a valid index of the name is there, or when `skip_if` says so)."""
    stmt = Statement(
        create,
        SUE,
        table,
        scans=True,
        note="scans the table twice; reads and writes continue",
        builds=index,
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
        keys = sql.SQL(", ").join(index_key(key) for key in step.keys)
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
        storage=step.storage_parameters,
    )


def index_key(key: IndexColumn) -> sql.Composed:
    """One index key: the column, then COLLATE, operator class (with its parameters), ASC or
    DESC and NULLS FIRST or LAST, in PostgreSQL's order."""
    parts: list[sql.Composable] = [sql.Identifier(key.column)]
    if key.collate is not None:
        parts.append(sql.SQL(" COLLATE {}").format(sql.Identifier(key.collate)))
    if key.opclass is not None:
        parts.append(sql.SQL(" ") + sql.Identifier(key.opclass.name))
        if key.opclass.params:
            params = sql.SQL(", ").join(map(user_sql, key.opclass.params))
            parts.append(sql.SQL(" ({})").format(params))
    if key.sort is not None:
        parts.append(sql.SQL(" DESC" if key.sort == "desc" else " ASC"))
    if key.nulls is not None:
        parts.append(sql.SQL(" NULLS FIRST" if key.nulls == "first" else " NULLS LAST"))
    return sql.Composed(parts)


@inverse(CreateIndex)
def undo_create_index(step: CreateIndex, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    return drop_index(DropIndex(name=str(table.sibling(step.name))), ctx)


@forward(DropIndex)
def drop_index(step: DropIndex, ctx: Context) -> list[Action]:
    index = ctx.table(step.name)
    return [
        drop_index_concurrently(
            index, None, "waits for running transactions; reads and writes continue"
        )
    ]


def drop_index_concurrently(index: Table, table: Table | None, note: str) -> Txn:
    """`DROP INDEX CONCURRENTLY` of an index (of `table`, when known), skipped once it is gone."""
    stmt = Statement(
        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(index.ident()), SUE, table, note=note
    )
    return Txn(
        (stmt,), f"drop index {index.name}", transactional=False, skip_if=cat.index_missing(index)
    )


@remembers(DropIndex)
def remember_index(step: DropIndex, ctx: Context) -> Query:
    return cat.index_record(ctx.table(step.name))


@inverse(DropIndex)
def restore_index(step: DropIndex, ctx: Context) -> list[Action]:
    """The index the step dropped, built again from the run's record of it."""
    what = f"drop_index {step.name}"
    record = recorded(ctx, what, "how the index was defined").get("index")
    if record is None:
        return []  # there was no such index: the step dropped nothing
    index = Table(record["schema"], record["name"])
    kept = _kept_by_postgres(record)
    if kept is not None:
        # The step cannot have dropped it; say so if it is gone all the same.
        return [Check(cat.index_exists(index), True, f"index {index} is still there: {kept}")]
    return rebuild_index(record, what)


def _kept_by_postgres(record: dict[str, Any]) -> str | None:
    """Why PostgreSQL refuses `DROP INDEX CONCURRENTLY` of this index, if it does."""
    if record["used_by"] is not None:
        return f"PostgreSQL does not drop an index that constraint {record['used_by']} uses"
    if record["partitioned"]:
        return "PostgreSQL does not drop the index of a partitioned table concurrently"
    if record["partition"]:
        return "PostgreSQL does not drop an index that belongs to a partitioned index"
    return None


def rebuild_index(record: dict[str, Any], what: str, skip_if: Query | None = None) -> list[Action]:
    """The units that build a recorded index again as it was: concurrently, under its own name,
    in its tablespace, then its settings (statistics targets, CLUSTER ON, comment, replica
    identity). Raises Irreversible for an index that a rebuild would not restore exactly."""
    table = Table(record["schema"], record["table"])
    index = table.sibling(record["name"])
    if not record["valid"]:
        raise Irreversible(
            f"{what}: index {index} was INVALID (left by a failed build); building it again would"
            " make a valid index, not the one that was there"
        )
    actions = concurrent_build(table, index, _create_concurrently(record, what), skip_if)
    settings: list[Statement] = [
        Statement(
            sql.SQL("ALTER INDEX {} ALTER COLUMN {} SET STATISTICS {}").format(
                index.ident(), sql.Literal(attnum), sql.Literal(target)
            ),
            SUE,
            table,
            note="catalog only",
        )
        for attnum, target in record["statistics"] or []
    ]
    if record["clustered"]:
        settings.append(
            Statement(
                sql.SQL("ALTER TABLE {} CLUSTER ON {}").format(
                    table.ident(), sql.Identifier(index.name)
                ),
                SUE,
                table,
                note="catalog only",
            )
        )
    if record["comment"] is not None:
        settings.append(
            Statement(
                sql.SQL("COMMENT ON INDEX {} IS {}").format(
                    index.ident(), sql.Literal(record["comment"])
                ),
                SUE,
                table,
                note="catalog only",
            )
        )
    if settings:
        actions.append(Txn(tuple(settings), f"restore the settings of index {index.name}"))
    if record["replica_identity"]:
        stmt = Statement(
            sql.SQL("ALTER TABLE {} REPLICA IDENTITY USING INDEX {}").format(
                table.ident(), sql.Identifier(index.name)
            ),
            AE,
            table,
            note="catalog only",
        )
        actions.append(
            Txn(
                (stmt,),
                f"make {index.name} the replica identity again",
                skip_if=cat.index_replica_identity(index),
            )
        )
    return actions


def _create_concurrently(record: dict[str, Any], what: str) -> sql.Composed:
    """The recorded `CREATE [UNIQUE] INDEX` made CONCURRENTLY, with the index's tablespace.

    pg_get_indexdef gives no tablespace; PostgreSQL's grammar takes it right before the
    predicate, which the definition ends with as pg_get_expr prints it.
    """
    # SQL text that pg_get_indexdef gave and the run recorded in zdm's state: trusted as the
    # plan is.
    definition: str = record["definition"]
    for head in ("CREATE UNIQUE INDEX ", "CREATE INDEX "):
        if definition.startswith(head):
            break
    else:
        raise Irreversible(f"{what}: unexpected index definition {definition!r}")
    body = definition[len(head) :]
    tail = f" WHERE {record['predicate']}" if record["predicate"] is not None else ""
    if not body.endswith(tail):
        raise Irreversible(f"{what}: unexpected index definition {definition!r}")
    body = body[: len(body) - len(tail)]
    space: sql.Composable = sql.SQL("")
    if record["tablespace"] is not None:
        space = sql.SQL(" TABLESPACE {}").format(sql.Identifier(record["tablespace"]))
    return sql.SQL("{}CONCURRENTLY {}{}{}").format(
        user_sql(head), user_sql(body), space, user_sql(tail)
    )
