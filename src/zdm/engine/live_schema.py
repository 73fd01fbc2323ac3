"""What `zdm lint --dsn` reads from a live database: each table's columns with their current
types, its row estimate and its size (a partitioned table's: its partitions', summed), and
whether it is partitioned. One read-only query of the catalog; nothing is locked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zdm.engine.session import connect

_QUERY = """
SELECT n.nspname, c.relname,
       CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(greatest(l.reltuples, 0)), 0)::bigint
            FROM pg_partition_tree(c.oid) t JOIN pg_class l ON l.oid = t.relid WHERE t.isleaf)
            ELSE c.reltuples::bigint END,
       CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)
            FROM pg_partition_tree(c.oid) t) ELSE pg_total_relation_size(c.oid) END,
       c.relkind = 'p',
       a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
ORDER BY n.nspname, c.relname, a.attnum
"""


@dataclass
class LiveTable:
    schema: str
    name: str
    rows: int
    """The planner's estimate; -1 when the table was never analyzed or vacuumed."""
    bytes: int
    columns: dict[str, str] = field(default_factory=dict)
    """Column -> type as PostgreSQL spells it (``character varying(255)``)."""
    partitioned: bool = False


@dataclass
class LiveSchema:
    server_major: int
    tables: list[LiveTable]


def read_live_schema(dsn: str) -> LiveSchema:
    tables: dict[tuple[str, str], LiveTable] = {}
    with connect(dsn, "lint", autocommit=False) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        major = conn.info.server_version // 10000
        for nsp, rel, rows, size, parted, column, type_ in conn.execute(_QUERY).fetchall():
            table = tables.setdefault((nsp, rel), LiveTable(nsp, rel, rows, size, {}, parted))
            if column is not None:
                table.columns[column] = type_
        conn.rollback()
    return LiveSchema(major, list(tables.values()))
