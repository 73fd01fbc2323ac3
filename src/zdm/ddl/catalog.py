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


regclass = _rel


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


def columns_not_null(table: Table, columns: list[str]) -> sql.Composed:
    """True when every one of the columns is NOT NULL."""
    return sql.SQL(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {rel}"
        " AND attname = ANY ({cols}::name[]) AND NOT attnotnull)"
    ).format(rel=_rel(table), cols=sql.Literal(columns))


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


def index_being_built(index: Table) -> sql.Composed:
    """True while another session builds this index: a CREATE INDEX [CONCURRENTLY] in progress,
    such as a killed run's build that the server has not yet found orphaned."""
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_progress_create_index"
        " WHERE index_relid = {} AND pid <> pg_backend_pid())"
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


def index_exists(index: Table) -> sql.Composed:
    return table_exists(index)


def index_replica_identity(index: Table) -> sql.Composed:
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = {} AND indisreplident)"
    ).format(_rel(index))


def constraint_not_pending(table: Table, name: str) -> sql.Composed:
    """True unless a NOT VALID constraint of this name is there to validate."""
    return sql.SQL(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = {rel} AND conname = {name}"
        " AND NOT convalidated)"
    ).format(rel=_rel(table), name=_lit(name))


def no_other_pending_not_null(table: Table, column: str, name: str) -> sql.Composed:
    """True unless the column has a NOT VALID not-null constraint named other than `name`."""
    return sql.SQL(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_attribute a"
        " ON a.attrelid = c.conrelid AND c.conkey = ARRAY[a.attnum] WHERE c.conrelid = {rel}"
        " AND c.contype = 'n' AND a.attname = {col} AND c.conname <> {name}"
        " AND NOT c.convalidated)"
    ).format(rel=_rel(table), col=_lit(column), name=_lit(name))


# --- records: what a step remembers for its inverse (one jsonb value each) -------------------
# They run under an empty search_path (see Store.step_started), so the definitions they read
# name every table, type and function with its schema.


def _index_facts(oid: sql.Composable) -> sql.Composed:
    """One index as an object: its definition and every fact a rebuild must restore or refuse."""
    return sql.SQL(
        "SELECT jsonb_build_object('name', c.relname, 'schema', n.nspname, 'table', t.relname,"
        " 'definition', pg_get_indexdef(i.indexrelid),"
        " 'predicate', pg_get_expr(i.indpred, i.indrelid),"
        " 'method', am.amname, 'valid', i.indisvalid AND i.indisready,"
        " 'partitioned', c.relkind = 'I', 'partition', c.relispartition,"
        " 'used_by', (SELECT min(k.conname) FROM pg_constraint k WHERE k.conindid = i.indexrelid),"
        " 'tablespace', (SELECT s.spcname FROM pg_tablespace s WHERE s.oid = c.reltablespace),"
        " 'clustered', i.indisclustered, 'replica_identity', i.indisreplident,"
        " 'comment', obj_description(i.indexrelid, 'pg_class'),"
        " 'statistics', (SELECT jsonb_agg(jsonb_build_array(a.attnum, a.attstattarget)"
        " ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = i.indexrelid"
        " AND a.attstattarget >= 0))"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
        " JOIN pg_am am ON am.oid = c.relam WHERE i.indexrelid = {}"
    ).format(oid)


def index_record(index: Table) -> sql.Composed:
    """`{"index": …}`: the index as `_index_facts` gives it, null when there is none."""
    return sql.SQL("SELECT jsonb_build_object('index', ({}))").format(_index_facts(_rel(index)))


def constraint_record(table: Table, name: str) -> sql.Composed:
    """`{"constraint": …}`: the constraint's definition, validity and what else a re-add must
    restore or refuse (its index for PRIMARY KEY, UNIQUE, EXCLUDE); null when there is none."""
    return sql.SQL(
        "SELECT jsonb_build_object('constraint', (SELECT jsonb_build_object("
        "'type', con.contype::text, 'definition', pg_get_constraintdef(con.oid),"
        " 'validated', con.convalidated, 'deferrable', con.condeferrable, 'deferred', con.condeferred,"
        " 'inherited', con.coninhcount > 0 OR NOT con.conislocal,"
        " 'children', tbl.relkind = 'p' OR EXISTS (SELECT 1 FROM pg_inherits h"
        " WHERE h.inhparent = con.conrelid),"
        " 'columns', (SELECT jsonb_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a"
        " WHERE a.attrelid = con.conrelid AND a.attnum = ANY (con.conkey)),"
        " 'references', (SELECT jsonb_build_array(rn.nspname, r.relname) FROM pg_class r"
        " JOIN pg_namespace rn ON rn.oid = r.relnamespace WHERE r.oid = con.confrelid),"
        " 'comment', obj_description(con.oid, 'pg_constraint'),"
        " 'index', CASE WHEN con.contype IN ('p', 'u', 'x') THEN ({index}) END)"
        " FROM pg_constraint con JOIN pg_class tbl ON tbl.oid = con.conrelid"
        " WHERE con.conrelid = {rel} AND con.conname = {name}))"
    ).format(index=_index_facts(sql.SQL("con.conindid")), rel=_rel(table), name=_lit(name))


def not_null_record(table: Table, column: str) -> sql.Composed:
    """`{"not_null": …}`: the column's not-null constraint (PostgreSQL 18), its name, definition
    and validity; null when the column has none."""
    return sql.SQL(
        "SELECT jsonb_build_object('not_null', (SELECT jsonb_build_object('name', k.conname,"
        " 'definition', pg_get_constraintdef(k.oid), 'validated', k.convalidated)"
        " FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid"
        " AND k.conkey = ARRAY[a.attnum] WHERE k.conrelid = {rel} AND k.contype = 'n'"
        " AND a.attname = {col}))"
    ).format(rel=_rel(table), col=_lit(column))
