"""Catalog probes: boolean queries that tell whether an effect is already in the database.

`IF NOT EXISTS` alone is not enough (it reports success over an INVALID index), so each probe
checks the state that matters: valid, validated, of the right shape.
"""

from __future__ import annotations

from psycopg import sql

from zdm.ddl.statement import Table


def _lit(value: str) -> sql.Literal:
    return sql.Literal(value)


def _rel(table: Table) -> sql.Composed:
    """to_regclass() of a table: NULL when it does not exist, so probes never raise."""
    return sql.SQL("to_regclass({})").format(_lit(table.ident().as_string(None)))


def table_exists(table: Table) -> sql.Composed:
    return sql.SQL("SELECT {} IS NOT NULL").format(_rel(table))


def table_missing(table: Table) -> sql.Composed:
    return sql.SQL("SELECT {} IS NULL").format(_rel(table))


def column_exists(table: Table, column: str) -> sql.Composed:
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {rel} AND attname = {col}"
        " AND NOT attisdropped)"
    ).format(rel=_rel(table), col=_lit(column))


def column_missing(table: Table, column: str) -> sql.Composed:
    return sql.SQL("SELECT NOT ({})").format(column_exists(table, column))


def column_renamed(table: Table, old: str, new: str) -> sql.Composed:
    """Done when the new name exists and the old one is gone."""
    return sql.SQL("SELECT ({}) AND NOT ({})").format(
        column_exists(table, new), column_exists(table, old)
    )


def column_default(table: Table, column: str) -> sql.Composed:
    """`{"default": …}`: the column's default as pg_get_expr gives it, null when it has none."""
    return sql.SQL(
        "SELECT jsonb_build_object('default', (SELECT pg_get_expr(d.adbin, d.adrelid)"
        " FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
        " WHERE d.adrelid = {rel} AND a.attname = {col} AND NOT a.attisdropped"
        " AND a.attgenerated = ''))"
    ).format(rel=_rel(table), col=_lit(column))


def column_not_null(table: Table, column: str) -> sql.Composed:
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {rel} AND attname = {col}"
        " AND attnotnull)"
    ).format(rel=_rel(table), col=_lit(column))


def column_nullable(table: Table, column: str) -> sql.Composed:
    return sql.SQL(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {rel} AND attname = {col}"
        " AND attnotnull)"
    ).format(rel=_rel(table), col=_lit(column))


def index_valid(index: Table) -> sql.Composed:
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = {} AND indisvalid AND indisready)"
    ).format(_rel(index))


def index_not_invalid(index: Table) -> sql.Composed:
    """True unless an INVALID index of this name is in the way (left by a failed build)."""
    return sql.SQL(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = {} AND NOT indisvalid)"
    ).format(_rel(index))


def index_missing(index: Table) -> sql.Composed:
    return table_missing(index)


def constraint_exists(table: Table, name: str) -> sql.Composed:
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = {rel} AND conname = {name})"
    ).format(rel=_rel(table), name=_lit(name))


def constraint_missing(table: Table, name: str) -> sql.Composed:
    return sql.SQL("SELECT NOT ({})").format(constraint_exists(table, name))


def constraint_validated(table: Table, name: str) -> sql.Composed:
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = {rel} AND conname = {name}"
        " AND convalidated)"
    ).format(rel=_rel(table), name=_lit(name))


def trigger_exists(table: Table, name: str) -> sql.Composed:
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = {rel} AND tgname = {name})"
    ).format(rel=_rel(table), name=_lit(name))


def trigger_missing(table: Table, name: str) -> sql.Composed:
    return sql.SQL("SELECT NOT ({})").format(trigger_exists(table, name))


def all_of(*probes: sql.Composable) -> sql.Composed:
    return sql.SQL("SELECT {}").format(
        sql.SQL(" AND ").join(sql.SQL("({})").format(p) for p in probes)
    )


def function_missing(function: Table) -> sql.Composed:
    return sql.SQL("SELECT to_regprocedure({}) IS NULL").format(
        _lit(function.ident().as_string(None) + "()")
    )


def not_null_validated(table: Table, column: str) -> sql.Composed:
    """attnotnull, and no NOT VALID not-null constraint on the column left to validate (PG >= 18)."""
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = {rel} AND a.attname = {col}"
        " AND a.attnotnull AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conrelid = {rel}"
        " AND c.contype = 'n' AND c.conkey = ARRAY[a.attnum] AND NOT c.convalidated))"
    ).format(rel=_rel(table), col=_lit(column))
