"""A partitioned table's tree as the catalog gives it, and the names zdm derives for its partitions.

PostgreSQL builds nothing concurrently on a partitioned table, so recipes on one work partition by
partition: the engine reads the tree (`TREE`) before each step and again before the step counts
as done, and planners turn it into per-partition units (`zdm.operations.partitioned`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from psycopg import sql

from zdm.ddl.statement import Table

NAMEDATALEN = 63


@dataclass(frozen=True, order=True)
class Partition:
    """One table below the root: its direct parent, its depth (1 under the root) and whether it
    holds rows (a leaf) or is partitioned again."""

    level: int
    table: Table
    parent: Table
    leaf: bool


@dataclass(frozen=True)
class Partitioning:
    """A partitioned table's partitions (every level, shallowest first) and partition keys."""

    root: Table
    members: tuple[Partition, ...]
    key_columns: tuple[str, ...]
    """The columns of the partition keys of every partitioned level, in order, once each."""
    key_expressions: bool = False
    """Some level partitions by an expression: no unique index can cover it."""

    @property
    def leaves(self) -> tuple[Partition, ...]:
        return tuple(p for p in self.members if p.leaf)

    @property
    def inner(self) -> tuple[Partition, ...]:
        """The partitioned tables below the root (a second level and deeper)."""
        return tuple(p for p in self.members if not p.leaf)

    def bottom_up(self) -> tuple[Partition, ...]:
        """Deepest first: each child is attached before its parent is."""
        return tuple(sorted(self.members, key=lambda p: (-p.level, p.table)))


def derived_name(base: str, partition: Table) -> str:
    """The name zdm gives the partition's own copy of object `base` (an index): `base_partition`,
    shortened with a hash of the whole when it would pass PostgreSQL's 63 bytes."""
    name = f"{base}_{partition.name}"
    if len(name.encode()) <= NAMEDATALEN:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    head = name.encode()[: NAMEDATALEN - 9].decode(errors="ignore")
    return f"{head}_{digest}"


# Every partition under the tables asked for (`%(tables)s`: qualified names as text), each with
# its root, parent, depth and kind; and every partitioned level's key columns (0: an expression).
TREE = sql.SQL(
    """
WITH RECURSIVE roots AS (
  SELECT c.oid FROM unnest(%(tables)s::text[]) AS t(name)
  JOIN pg_class c ON c.oid = to_regclass(t.name) WHERE c.relkind = 'p'
), tree AS (
  SELECT r.oid AS root, r.oid AS rel, NULL::oid AS parent, 0 AS level FROM roots r
  UNION ALL
  SELECT t.root, i.inhrelid, i.inhparent, t.level + 1 FROM tree t
  JOIN pg_inherits i ON i.inhparent = t.rel
)
SELECT rn.nspname, r.relname, n.nspname, c.relname, pn.nspname, p.relname, t.level,
       c.relkind <> 'p',
       (SELECT array_agg(coalesce(a.attname, '') ORDER BY k.n)
        FROM pg_partitioned_table pt CROSS JOIN LATERAL unnest(pt.partattrs)
             WITH ORDINALITY AS k(attnum, n)
        LEFT JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = k.attnum
        WHERE pt.partrelid = c.oid)
FROM tree t
JOIN pg_class r ON r.oid = t.root JOIN pg_namespace rn ON rn.oid = r.relnamespace
JOIN pg_class c ON c.oid = t.rel JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class p ON p.oid = t.parent LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace
ORDER BY t.root, t.level, n.nspname, c.relname
"""
)
