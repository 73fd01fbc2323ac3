"""What the live catalog says about a column that a change copies, for `zdm.plan.expand`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from zdm.engine.session import connect
from zdm.plan.expand import (
    COPY_PREFIX,
    ColumnFacts,
    FactReader,
    ForeignKeyFact,
    IndexFact,
    ReferenceFact,
)

_COLUMN = """
SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), col_description(a.attrelid, a.attnum),
       a.attidentity, a.attgenerated, c.relkind, a.attnum, c.oid,
       (SELECT k.conname FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'n'
        AND k.conkey = ARRAY[a.attnum])
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND a.attname = %(column)s
"""

# Every index on the table that uses the column: as a key, an included column, or inside an
# expression or predicate (pg_depend), with whether a plain create_index can rebuild it.
_INDEXES = """
SELECT i.relname, ix.indisunique, am.amname,
       ix.indexprs IS NULL AND ix.indpred IS NULL AND ix.indnatts = ix.indnkeyatts
         AND NOT EXISTS (SELECT 1 FROM unnest(ix.indoption) o WHERE o <> 0)
         AND NOT EXISTS (SELECT 1 FROM unnest(ix.indclass) oc JOIN pg_opclass op ON op.oid = oc
                         WHERE NOT op.opcdefault)
         AND NOT EXISTS (SELECT 1 FROM unnest(ix.indcollation) WITH ORDINALITY AS k(coll, n)
                         JOIN pg_attribute ka ON ka.attrelid = ix.indrelid
                          AND ka.attnum = ix.indkey[k.n - 1]
                         WHERE k.coll <> 0 AND k.coll <> ka.attcollation),
       ARRAY(SELECT ka.attname FROM unnest(ix.indkey) WITH ORDINALITY AS k(num, n)
             JOIN pg_attribute ka ON ka.attrelid = ix.indrelid AND ka.attnum = k.num
             ORDER BY k.n),
       EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conindid = ix.indexrelid
               AND co.conrelid = ix.indrelid AND co.contype IN ('p', 'u', 'x'))
FROM pg_index ix
JOIN pg_class i ON i.oid = ix.indexrelid
JOIN pg_am am ON am.oid = i.relam
WHERE ix.indrelid = %(rel)s
  AND (%(attnum)s = ANY (ix.indkey) OR EXISTS (
        SELECT 1 FROM pg_depend dep WHERE dep.classid = 'pg_class'::regclass
        AND dep.objid = ix.indexrelid AND dep.refobjid = %(rel)s
        AND dep.refobjsubid = %(attnum)s))
ORDER BY i.relname
"""

_CONSTRAINTS = """
SELECT co.conname, co.contype, co.condeferrable, co.confupdtype, co.confdeltype,
       co.confmatchtype,
       (SELECT rn.nspname || '.' || rc.relname FROM pg_class rc
        JOIN pg_namespace rn ON rn.oid = rc.relnamespace WHERE rc.oid = co.confrelid),
       ARRAY(SELECT ka.attname FROM unnest(co.conkey) WITH ORDINALITY AS k(num, n)
             JOIN pg_attribute ka ON ka.attrelid = co.conrelid AND ka.attnum = k.num
             ORDER BY k.n),
       ARRAY(SELECT ka.attname FROM unnest(co.confkey) WITH ORDINALITY AS k(num, n)
             JOIN pg_attribute ka ON ka.attrelid = co.confrelid AND ka.attnum = k.num
             ORDER BY k.n)
FROM pg_constraint co
WHERE co.conrelid = %(rel)s AND %(attnum)s = ANY (co.conkey) AND co.contype <> 'n'
ORDER BY co.conname
"""

# Foreign keys of other tables (or this one) that reference the column.
_REFERENCED_BY = """
SELECT co.conname, n.nspname || '.' || c.relname, co.condeferrable, co.confupdtype,
       co.confdeltype, co.confmatchtype, cardinality(co.confkey),
       ARRAY(SELECT ka.attname FROM unnest(co.conkey) WITH ORDINALITY AS k(num, i)
             JOIN pg_attribute ka ON ka.attrelid = co.conrelid AND ka.attnum = k.num
             ORDER BY k.i)
FROM pg_constraint co
JOIN pg_class c ON c.oid = co.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE co.confrelid = %(rel)s AND %(attnum)s = ANY (co.confkey) AND co.contype = 'f'
ORDER BY 1
"""

_SEQUENCE = """
SELECT n.nspname || '.' || c.relname FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = pg_get_serial_sequence(%(table)s, %(column)s)::regclass
"""

_DEPENDENTS = """
SELECT DISTINCT 'view ' || r.ev_class::regclass::text || ' reads it'
FROM pg_depend dep JOIN pg_rewrite r ON r.oid = dep.objid
WHERE dep.classid = 'pg_rewrite'::regclass AND dep.refobjid = %(rel)s
  AND dep.refobjsubid = %(attnum)s AND r.ev_class <> %(rel)s
UNION ALL
SELECT 'generated column ' || a.attname || ' is computed from it'
FROM pg_depend dep JOIN pg_attribute a ON a.attrelid = dep.objid AND a.attnum = dep.objsubid
WHERE dep.classid = 'pg_class'::regclass AND dep.objid = %(rel)s
  AND dep.refobjid = %(rel)s AND dep.refobjsubid = %(attnum)s AND dep.objsubid <> 0
UNION ALL
SELECT 'it is in the partition key'
FROM pg_partitioned_table p WHERE p.partrelid = %(rel)s AND %(attnum)s = ANY (p.partattrs)
UNION ALL
SELECT 'trigger ' || t.tgname || ' fires on updates of it'
FROM pg_trigger t WHERE t.tgrelid = %(rel)s AND NOT t.tgisinternal
  AND %(attnum)s = ANY (t.tgattr)
UNION ALL
SELECT 'policy ' || p.polname || ' reads it'
FROM pg_depend dep JOIN pg_policy p ON p.oid = dep.objid
WHERE dep.classid = 'pg_policy'::regclass AND dep.refobjid = %(rel)s
  AND dep.refobjsubid = %(attnum)s
"""

_ON_DELETE = {"a": None, "r": "restrict", "c": "cascade", "n": "set null", "d": "set default"}


def read_column_facts(
    conn: psycopg.Connection[Any], schema: str, table: str, column: str
) -> ColumnFacts | None:
    """The column's facts, or None when the table has no such column."""
    row = conn.execute(_COLUMN, {"schema": schema, "table": table, "column": column}).fetchone()
    if row is None:
        return None
    type_, not_null, default, comment, identity, generated, relkind, attnum, rel, nn_name = row
    refusals: list[str] = []
    if generated:
        refusals.append("it is a generated column")
    if relkind not in ("r", "p"):
        refusals.append(f"{schema}.{table} is not a table")
    args = {"rel": rel, "attnum": attnum}
    indexes: list[IndexFact] = []
    for name, unique, method, plain, columns, backs in conn.execute(_INDEXES, args):
        if backs or name.startswith(COPY_PREFIX):
            continue
        if not plain:
            refusals.append(
                f"index {name} is not a plain list of columns (an expression, a predicate, "
                "included columns, an operator class, a collation or a sort order)"
            )
            continue
        indexes.append(IndexFact(name, tuple(columns), unique, method))
    primary_key: tuple[str, tuple[str, ...]] | None = None
    uniques: list[tuple[str, tuple[str, ...]]] = []
    foreign_keys: list[ForeignKeyFact] = []
    checks: list[str] = []
    for (
        name,
        contype,
        deferrable,
        on_update,
        on_delete,
        match,
        ref_table,
        columns,
        ref_columns,
    ) in conn.execute(_CONSTRAINTS, args):
        if name.startswith(COPY_PREFIX):
            continue
        if contype == "p":
            primary_key = (name, tuple(columns))
        elif contype == "x":
            refusals.append(f"exclusion constraint {name} uses it")
        elif deferrable:
            refusals.append(f"constraint {name} is deferrable")
        elif contype == "u":
            uniques.append((name, tuple(columns)))
        elif contype == "c":
            checks.append(name)
        elif contype == "f":
            if on_update != "a" or match != "s":
                refusals.append(f"foreign key {name} has ON UPDATE or MATCH FULL")
            else:
                foreign_keys.append(
                    ForeignKeyFact(
                        name, tuple(columns), ref_table, tuple(ref_columns), _ON_DELETE[on_delete]
                    )
                )
    referenced_by: list[ReferenceFact] = []
    for name, child, deferrable, on_update, on_delete, match, arity, columns in conn.execute(
        _REFERENCED_BY, args
    ):
        if deferrable or on_update != "a" or match != "s" or arity != 1:
            refusals.append(
                f"foreign key {name} of {child} references it with more than one column, "
                "ON UPDATE, MATCH FULL or DEFERRABLE"
            )
        else:
            referenced_by.append(ReferenceFact(name, child, tuple(columns), _ON_DELETE[on_delete]))
    refusals += [text for (text,) in conn.execute(_DEPENDENTS, args)]
    if relkind == "p" and primary_key:
        refusals.append(
            f"{schema}.{table} is partitioned and the column is in its primary key: PostgreSQL"
            " cannot swap in a primary key built beforehand (ADD PRIMARY KEY USING INDEX) on a"
            " partitioned table"
        )
    qualified = sql.Identifier(schema, table).as_string(None)
    sequence_row = conn.execute(_SEQUENCE, {"table": qualified, "column": column}).fetchone()
    return ColumnFacts(
        type=type_,
        not_null=not_null,
        default=default,
        comment=comment,
        not_null_name=nn_name,
        primary_key=primary_key,
        referenced_by=tuple(referenced_by),
        sequence=sequence_row[0] if sequence_row else None,
        identity=identity or None,
        indexes=tuple(indexes),
        uniques=tuple(uniques),
        foreign_keys=tuple(foreign_keys),
        checks=tuple(checks),
        refusals=tuple(refusals),
        partitioned=relkind == "p",
    )


@contextmanager
def catalog_facts(dsn: str | None) -> Iterator[FactReader | None]:
    """A reader of column facts over one connection opened on first use; None without a DSN."""
    if dsn is None:
        yield None
        return
    conns: list[psycopg.Connection[Any]] = []

    def read(schema: str, table: str, column: str) -> ColumnFacts | None:
        if not conns:
            conns.append(connect(dsn, "facts"))
        return read_column_facts(conns[0], schema, table, column)

    try:
        yield read
    finally:
        for conn in conns:
            conn.close()
