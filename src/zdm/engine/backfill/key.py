"""What a backfill walks: key columns in index order, or `ctid` page ranges."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from zdm.ddl import Table

INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})


@dataclass(frozen=True)
class Key:
    """What a backfill walks: key columns in index order, or no columns for a `ctid` walk."""

    columns: tuple[str, ...]
    source: str = "primary key"
    # One column of a type whose max() is the last key in ORDER BY (integers, the common
    # primary key): a batch's upper bound is then an aggregate, four times cheaper to compute.
    max_aggregate: bool = False

    @property
    def ctid(self) -> bool:
        return not self.columns

    def refs(self, table: Table | None = None) -> list[sql.Composable]:
        """The key columns, qualified by `table` when another table joins the statement."""
        if table is None:
            return [sql.Identifier(c) for c in self.columns]
        return [sql.Identifier(table.schema, table.name, c) for c in self.columns]

    def row(self, table: Table | None = None) -> sql.Composed:
        return sql.SQL("({})").format(sql.SQL(", ").join(self.refs(table)))

    def params(self) -> sql.Composed:
        return sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(self.columns)))

    def describe(self) -> str:
        if self.ctid:
            return "ctid page ranges"
        return f"{self.source} ({', '.join(self.columns)})"


CTID = Key((), "ctid")


def tid(page: int) -> str:
    return f"({page},0)"
