"""add_primary_key, rename_constraint, set_replica_identity.

add_primary_key builds a unique index concurrently and attaches it (`PRIMARY KEY USING INDEX`,
catalog only). Its columns must already be NOT NULL: otherwise PostgreSQL would set them NOT
NULL in the attach, scanning the table under ACCESS EXCLUSIVE, so the step refuses first.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from zdm.ddl import Action, LockMode, Query, Statement, Table, Txn
from zdm.ddl import catalog as cat
from zdm.ddl.quote import do_block
from zdm.operations.base import Context, forward, inverse, recorded, remembers
from zdm.operations.constraints import drop_index_backed, index_backed
from zdm.plan import AddPrimaryKey, RenameConstraint, SetReplicaIdentity

AE = LockMode.ACCESS_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE


def _not_null_guard(table: Table, step: AddPrimaryKey) -> Statement:
    message = (
        f"add_primary_key {step.name}: column % of {table} may be NULL; make it NOT NULL first "
        "(set_not_null), or attaching the key would scan the table under ACCESS EXCLUSIVE"
    )
    body = (
        "DECLARE nullable name; BEGIN"
        " SELECT attname INTO nullable FROM pg_attribute"
        f" WHERE attrelid = {cat.regclass(table).as_string(None)}"
        f" AND attname = ANY ({sql.Literal(step.columns).as_string(None)}::name[])"
        " AND NOT attnotnull LIMIT 1;"
        f" IF nullable IS NOT NULL THEN RAISE EXCEPTION {sql.Literal(message).as_string(None)},"
        " nullable; END IF; END"
    )
    return Statement(
        do_block(body), LockMode.NONE, note="refuses nullable key columns; locks nothing"
    )


@forward(AddPrimaryKey)
def add_primary_key(step: AddPrimaryKey, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    done = cat.constraint_exists(table, step.name)
    return [
        Txn((_not_null_guard(table, step),), "check the key's columns are NOT NULL", skip_if=done),
        *index_backed(
            table,
            step.name,
            step.columns,
            "PRIMARY KEY",
            "primary key",
            "catalog only: the index is built and the columns are NOT NULL",
        ),
    ]


@inverse(AddPrimaryKey)
def undo_add_primary_key(step: AddPrimaryKey, ctx: Context) -> list[Action]:
    return drop_index_backed(ctx.table(step.table), step.name)


def _rename_constraint(table: Table, old: str, new: str) -> Txn:
    stmt = Statement(
        sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
            table.ident(), sql.Identifier(old), sql.Identifier(new)
        ),
        AE,
        table,
        note="catalog only",
    )
    done = cat.all_of(cat.constraint_missing(table, old), cat.constraint_exists(table, new))
    return Txn((stmt,), f"rename constraint {old} to {new}", skip_if=done)


@forward(RenameConstraint)
def rename_constraint(step: RenameConstraint, ctx: Context) -> list[Action]:
    return [_rename_constraint(ctx.table(step.table), step.name, step.to)]


@inverse(RenameConstraint)
def undo_rename_constraint(step: RenameConstraint, ctx: Context) -> list[Action]:
    return [_rename_constraint(ctx.table(step.table), step.to, step.name)]


def _identity(table: Table, kind: str, index: str | None) -> Txn:
    what: sql.Composable
    if kind == "index":
        assert index is not None
        what = sql.SQL("USING INDEX {}").format(sql.Identifier(index))
    else:
        what = sql.SQL(kind.upper())
    stmt = Statement(
        sql.SQL("ALTER TABLE {} REPLICA IDENTITY {}").format(table.ident(), what),
        AE,
        table,
        note="catalog only",
    )
    return Txn((stmt,), f"replica identity {kind}")


@forward(SetReplicaIdentity)
def set_replica_identity(step: SetReplicaIdentity, ctx: Context) -> list[Action]:
    return [_identity(ctx.table(step.table), step.type, step.index)]


_IDENTITIES = {"d": "default", "f": "full", "n": "nothing", "i": "index"}


@remembers(SetReplicaIdentity)
def remember_replica_identity(step: SetReplicaIdentity, ctx: Context) -> Query:
    """`{"identity": "d"|"f"|"n"|"i", "index": name or null}`: the identity it replaces."""
    rel = cat.regclass(ctx.table(step.table))
    return sql.SQL(
        "SELECT jsonb_build_object('identity', c.relreplident, 'index', (SELECT i.relname"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " WHERE x.indrelid = c.oid AND x.indisreplident)) FROM pg_class c WHERE c.oid = {}"
    ).format(rel)


@inverse(SetReplicaIdentity)
def restore_replica_identity(step: SetReplicaIdentity, ctx: Context) -> list[Action]:
    what = f"set_replica_identity {step.table}"
    old: dict[str, Any] = recorded(ctx, what, "the replica identity it replaced")
    kind = _IDENTITIES[old["identity"]]
    return [_identity(ctx.table(step.table), kind, old.get("index"))]
