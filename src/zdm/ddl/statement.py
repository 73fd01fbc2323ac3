"""What operations hand to the executor: plain data, so a dry-run prints exactly what a run does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from zdm.ddl.locks import LockMode

Query = sql.SQL | sql.Composed
"""A statement as psycopg composes it: what the executor runs and the dry-run prints."""


@dataclass(frozen=True, order=True)
class Table:
    """A schema-qualified table (or index, function…) name."""

    schema: str
    name: str

    @classmethod
    def parse(cls, text: str, default_schema: str) -> Table:
        schema, dot, name = text.partition(".")
        return cls(schema, name) if dot else cls(default_schema, text)

    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def sibling(self, name: str) -> Table:
        """Another object in the same schema (indexes, trigger functions)."""
        return Table(self.schema, name)

    def regclass(self) -> sql.Composed:
        """The table as a regclass literal, for catalog probes."""
        return sql.SQL("{}::regclass").format(sql.Literal(self.ident().as_string(None)))

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


def user_sql(text: str) -> sql.SQL:
    """The one place a plan author's SQL text (an expression, a query) enters a statement verbatim.

    Plans are trusted code written by the people who run them, like a migration file; identifiers
    and values zdm itself adds are still composed with Identifier and Literal.
    """
    return sql.SQL(text)


@dataclass(frozen=True)
class Statement:
    """One SQL statement and the facts about it that decide how it must be run."""

    sql: Query
    lock: LockMode
    table: Table | None = None
    scans: bool = False
    rewrites: bool = False
    note: str | None = None
    also: tuple[Table, ...] = ()
    """More tables it locks in `lock` mode (raw SQL naming several)."""
    validates: str | None = None
    """The constraint of `table` it proves against every row (VALIDATE CONSTRAINT), recorded
    with the unit so that `zdm report` knows what the run proved."""
    builds: Table | None = None
    """The index it builds (CREATE INDEX CONCURRENTLY), recorded likewise."""

    def text(self) -> str:
        return self.sql.as_string(None)


def drop_if_exists(
    kind: str, target: Table, lock: LockMode, on: Table | None, note: str
) -> Statement:
    """`DROP <kind> IF EXISTS <target>` of a view or table, or of a function of no arguments;
    `on` is the relation whose lock it takes in `lock` mode, if any."""
    arguments = "()" if kind == "FUNCTION" else ""
    return Statement(
        sql.SQL("DROP {} IF EXISTS {}{}").format(sql.SQL(kind), target.ident(), sql.SQL(arguments)),
        lock,
        on,
        note=note,
    )


@dataclass(frozen=True)
class Wait:
    """A probe the executor polls, taking no lock, until it returns false: what must end before a
    unit may look at the catalog (`reason`, in words, for the logs and the dry-run)."""

    query: Query
    reason: str


@dataclass(frozen=True)
class Txn:
    """A unit the executor runs: one transaction, or one statement outside any (CONCURRENTLY).

    `skip_if` is a catalog probe returning one boolean: true means the effect is already there,
    so a resume after a crash between the work and its bookkeeping does not do it twice.
    `wait` is polled before `skip_if`, while the catalog is still changing under another session.
    """

    statements: tuple[Statement, ...]
    label: str
    transactional: bool = True
    skip_if: Query | None = None
    wait: Wait | None = None

    def __post_init__(self) -> None:
        if not self.transactional and len(self.statements) != 1:
            raise ValueError("a non-transactional unit holds exactly one statement")

    @property
    def lock(self) -> LockMode:
        return max((s.lock for s in self.statements), default=LockMode.NONE)

    @property
    def tables(self) -> tuple[Table, ...]:
        seen: dict[Table, None] = {}
        for s in self.statements:
            if s.lock.blocks_app:
                seen.update(dict.fromkeys(t for t in (s.table, *s.also) if t is not None))
        return tuple(seen)

    @property
    def blocks_app(self) -> bool:
        return self.lock.blocks_app


@dataclass(frozen=True)
class Check:
    """A read-only query whose single value must equal `expect` (the `verify` step)."""

    query: Query
    expect: Any
    label: str


@dataclass(frozen=True)
class BackfillSource:
    """The other table of a cross-table backfill, and the condition joining its rows."""

    table: Table
    on: str


@dataclass(frozen=True)
class BackfillJob:
    """A batched update the backfill engine runs; the planner resolves defaults, not the catalog."""

    table: Table
    set: dict[str, str]
    where: str | None
    options: Any  # zdm.plan.Backfill: batch sizing and throttles
    source: BackfillSource | None = None
    label: str = "backfill"
    skip_triggers: tuple[str, ...] = ()
    """Mappings of dual-write triggers its batches need not fire (`zdm.skip_triggers`)."""
    part: str | None = None
    """The partition of a partitioned table this walk is of: its checkpoints are its own."""


Action = Txn | Check | BackfillJob
