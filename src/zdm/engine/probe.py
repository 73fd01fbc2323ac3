"""Every SQL expression of a plan compiled against the live schema before anything is created.

The plan's tables are copied as empty temporary tables (`LIKE`, with their defaults), the plan's
additions (new tables, columns, renames) are applied to the copies, and each expression is
compiled against them: the DDL a step would run (a CHECK, an index, a default) runs for real on
the empty copy, queries (mappings, `where`, `from`, `verify`) are only planned (`EXPLAIN`).
The live tables are never altered, and only ever share-locked (`LIKE`, planning a `verify` or a
`from` table), each briefly under a short `lock_timeout`; everything is rolled back.

Unqualified names in an expression find the copies first (temporary tables come first in the
search path); a name qualified with its schema (`public.users`) finds the live table, which does
not have the plan's additions yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, sql

from zdm.ddl import Table, user_sql
from zdm.ddl.quote import do_block
from zdm.plan import (
    AddCheck,
    AddColumn,
    Backfill,
    CreateIndex,
    CreateTable,
    DualWrite,
    LoadedPlan,
    PlanIssue,
    RenameColumn,
    RenameTable,
    SetDefault,
    Sql,
    Verify,
)
from zdm.plan.changes import AlterColumn
from zdm.plan.expand import copy_name
from zdm.plan.messages import format_path
from zdm.plan.model import PlanStep
from zdm.plan.yamlsource import read_yaml
from zdm.state import Direction, RunStatus, StepStatus, Store

#: How long a probe waits for a share lock on a live table, and runs at most.
PROBE_LOCK_TIMEOUT = "2s"
PROBE_STATEMENT_TIMEOUT = "30s"
#: Undefined table, column, function, object, schema: after a `sql` step, which the check does
#: not run, a name it does not find may be one that step creates.
UNDEFINED = frozenset({"42P01", "42703", "42883", "42704", "3F000"})


@dataclass(frozen=True)
class Probe:
    """One statement that compiles one field of a step; its failure is reported at ``loc``."""

    loc: tuple[str | int, ...]
    statement: sql.Composed | sql.SQL
    checked: bool = True
    """False for the plan's own additions applied to the copies, which are not the pending steps'."""


class ProbeBlocked(Exception):
    """The check could not run: a live table stayed locked, or a probe ran too long."""


def expression_issues(
    conn: psycopg.Connection[Any], loaded: LoadedPlan, pending: Iterable[str] | None = None
) -> list[PlanIssue]:
    """Each expression of the plan's ``pending`` steps (keys; all by default) that does not compile.

    An issue carries the plan's file:line, the field's path and PostgreSQL's message and hint.
    """
    keys = None if pending is None else set(pending)
    document = read_yaml(loaded.text)
    file = str(loaded.path)
    issues: list[PlanIssue] = []
    # Rolled back at the end: the copies and whatever the probes made on them go away.
    with conn.transaction(force_rollback=True):
        conn.execute(
            sql.SQL("SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}").format(
                sql.Literal(PROBE_LOCK_TIMEOUT), sql.Literal(PROBE_STATEMENT_TIMEOUT)
            )
        )
        copies = _Copies(conn, loaded.plan.schema_)
        raw = False  # a `sql` step came first: it may create what later steps name
        for step in loaded.steps():
            wanted = keys is None or step.key in keys
            swap = _swap_of(loaded, step)
            raw = raw or (isinstance(step.spec, Sql) and swap is None)
            try:
                for probe in copies.swapped(*swap) if swap else copies.probes(step):
                    try:
                        with conn.transaction():
                            conn.execute(probe.statement)
                    except (errors.LockNotAvailable, errors.QueryCanceled):
                        raise
                    except psycopg.DatabaseError as e:
                        unknown = raw and e.diag.sqlstate in UNDEFINED
                        if wanted and probe.checked and not unknown:
                            where = written_loc(loaded, step, probe.loc)
                            issue = _issue(file, document, where, e)
                            if issue not in issues:  # a change's `up` fills two steps
                                issues.append(issue)
            except (errors.LockNotAvailable, errors.QueryCanceled) as e:
                raise ProbeBlocked(
                    f"could not check the expressions of step {step.key}: "
                    f"{e.diag.message_primary} (lock_timeout {PROBE_LOCK_TIMEOUT}, statement_timeout"
                    f" {PROBE_STATEMENT_TIMEOUT}); nothing was changed, try again"
                ) from None
            except psycopg.DatabaseError as e:
                # Making a temporary copy failed (the role may lack the TEMP privilege).
                raise ProbeBlocked(
                    f"could not check the expressions of step {step.key}: the temporary copy of"
                    f" its table: {e.diag.message_primary}; nothing was changed"
                ) from None
    return issues


def pending_keys(conn: psycopg.Connection[Any], store: Store, name: str) -> set[str] | None:
    """Keys of the steps still to do: an unfinished run's, none after a completed run, else all."""
    if not store.exists(conn):
        return None
    run = store.unfinished_run(conn, name)
    if run is None:
        latest = store.latest_run(conn, name)
        done = (
            latest is not None
            and latest.status == RunStatus.COMPLETED
            and latest.direction == Direction.FORWARD
        )
        return set() if done else None
    if run.direction != Direction.FORWARD:
        return set()
    return {r.key for r in store.steps(conn, run.id) if r.status != StepStatus.DONE}


def _swap_of(loaded: LoadedPlan, step: PlanStep) -> tuple[str, str, str] | None:
    """(table, old column, its copy's final name) when `step` is the `sql` step an alter_column
    swaps its copy column in with: zdm's own SQL, whose effect the check makes on the copies
    (the steps after it name the column as the swap leaves it)."""
    path = loaded.step_paths.get(step.key)
    if not isinstance(step.spec, Sql) or path is None or path[0] != "changes":
        return None
    if loaded.source is None:
        return None
    change = loaded.source.changes[int(path[1])]
    if not isinstance(change, AlterColumn):
        return None
    return change.table, change.column, change.name or change.column


# The field of a change that an expanded step's field comes from: (step kind, its field) ->
# the change's field. A step of a change whose field is not here points at the change.
_CHANGE_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("dual_write", "set"): ("up",),
    ("dual_write", "reverse"): ("down",),
    ("backfill", "set"): ("up",),
    ("backfill", "where"): ("up",),
    ("add_check", "check"): ("check", "constraint"),
    ("set_default", "default"): ("default",),
    ("add_column", "column"): ("default",),
}


def written_loc(
    loaded: LoadedPlan, step: PlanStep, loc: tuple[str | int, ...]
) -> tuple[str | int, ...]:
    """Where the field `loc` of the expanded plan's `step` is written in the file: the step's
    own place (a hand-written step's index in `phases` may differ), or the field of the change
    it was expanded from (`down` for its dual-write's reverse mapping, …)."""
    path = loaded.step_paths.get(step.key)
    if path is None:
        return loc
    if path[0] != "changes" or loaded.source is None:
        return (*path, *loc[3:])
    change = loaded.source.changes[int(path[1])]
    field = _CHANGE_FIELDS.get((step.kind, str(loc[4]))) if len(loc) > 4 else None
    if field is not None and field[0] in change.model_fields_set:
        return (*path, change.kind, *field)
    return (*path, change.kind)


def _issue(
    file: str, document: Any, loc: tuple[str | int, ...], e: psycopg.DatabaseError
) -> PlanIssue:
    diag = e.diag
    message = diag.message_primary or str(e).strip()
    if diag.message_detail:
        message += f" ({diag.message_detail})"
    if diag.message_hint:
        message += f"; hint: {diag.message_hint}"
    message = message.replace("pg_temp.", "").replace('"pg_temp".', "")
    line, column = document.position(loc) or (None, None)
    return PlanIssue(file, line, column, format_path(loc), f"{message} [SQLSTATE {diag.sqlstate}]")


class _Copies:
    """The temporary copies of the plan's tables, and the probes of each step over them."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self.copied: dict[Table, sql.Identifier] = {}

    def table(self, name: str) -> sql.Identifier | None:
        """The copy of the table ``name`` (made on first use); None when there is no such table
        (the plan's check against the live schema says so, in its own words)."""
        table = Table.parse(name, self.schema)
        if table not in self.copied:
            exists = self.conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", [table.ident().as_string(self.conn)]
            ).fetchone()
            if not (exists and exists[0]):
                return None
            self.conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP"
                ).format(sql.Identifier(table.name), table.ident())
            )
            self.copied[table] = sql.Identifier("pg_temp", table.name)
        return self.copied[table]

    def swapped(self, table_name: str, column: str, final: str) -> Iterator[Probe]:
        """An alter_column's swap made on the table's copy: the old column dropped, the copy
        column under the final name (when the copy column is there: the plan added it)."""
        copy = self.table(table_name)
        if copy is None:
            return
        body = sql.SQL(
            "BEGIN IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {rel}::regclass"
            " AND attname = {new} AND NOT attisdropped) THEN"
            " ALTER TABLE {copy} DROP COLUMN {old} CASCADE;"
            " ALTER TABLE {copy} RENAME COLUMN {new_id} TO {final}; END IF; END"
        ).format(
            rel=sql.Literal(copy.as_string(None)),
            new=sql.Literal(copy_name(column)),
            copy=copy,
            old=sql.Identifier(column),
            new_id=sql.Identifier(copy_name(column)),
            final=sql.Identifier(final),
        )
        yield Probe((), do_block(body), checked=False)

    def probes(self, step: PlanStep) -> Iterator[Probe]:
        spec = step.spec
        at: tuple[str | int, ...] = ("phases", step.phase, step.index, step.kind)
        if isinstance(spec, CreateTable):
            table = Table.parse(spec.table, self.schema)
            self.copied[table] = sql.Identifier("pg_temp", table.name)
            columns = []
            for coldef in spec.columns:
                parts: list[sql.Composable] = [sql.Identifier(coldef.name), user_sql(coldef.type)]
                if coldef.default is not None:
                    parts += [sql.SQL("DEFAULT"), user_sql(f"({coldef.default})")]
                check = coldef.check
                if check is not None:
                    text = check if isinstance(check, str) else check.constraint
                    parts += [sql.SQL("CHECK"), user_sql(f"({text})")]
                columns.append(sql.SQL(" ").join(parts))
            yield Probe(
                at,
                sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DROP").format(
                    sql.Identifier(table.name), sql.SQL(", ").join(columns)
                ),
            )
            return
        table_name = getattr(spec, "table", None)
        copy = self.table(table_name) if isinstance(table_name, str) else None
        if isinstance(spec, RenameTable) and copy is not None:
            old = Table.parse(spec.table, self.schema)
            yield Probe(
                at,
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(copy, sql.Identifier(spec.to)),
                checked=False,
            )
            self.copied[old.sibling(spec.to)] = sql.Identifier("pg_temp", spec.to)
        elif isinstance(spec, AddColumn) and copy is not None:
            col = spec.column
            pieces: list[sql.Composable] = [
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} ").format(
                    copy, sql.Identifier(col.name)
                ),
                user_sql(col.type),
            ]
            if col.default is not None:
                pieces += [sql.SQL(" DEFAULT "), user_sql(f"({col.default})")]
            yield Probe((*at, "column"), sql.Composed(pieces))
            # Without a default that failed, so that later steps are checked with the column.
            yield Probe(at, sql.Composed(pieces[:2]), checked=False)
        elif isinstance(spec, RenameColumn) and copy is not None:
            # On a resumed run the live table may have the new name already.
            yield Probe(
                at,
                sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
                    copy, sql.Identifier(spec.column), sql.Identifier(spec.to)
                ),
                checked=False,
            )
        elif isinstance(spec, SetDefault) and copy is not None:
            yield Probe(
                (*at, "default"),
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT ").format(
                    copy, sql.Identifier(spec.column)
                )
                + user_sql(f"({spec.default})"),
            )
        elif isinstance(spec, AddCheck) and copy is not None:
            yield Probe(
                (*at, "check"),
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ").format(
                    copy, sql.Identifier(spec.name)
                )
                + user_sql(f"({spec.check})")
                + sql.SQL(" NOT VALID"),
            )
        elif isinstance(spec, CreateIndex) and copy is not None:
            if spec.expression is not None:
                what: sql.Composable = user_sql(f"({spec.expression})")
                loc = (*at, "expression")
            else:
                what = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
                loc = (*at, "columns")
            statement = (
                sql.SQL("CREATE INDEX ON {} USING {} (").format(copy, sql.Identifier(spec.method))
                + what
                + sql.SQL(")")
            )
            yield Probe(loc, statement)
            if spec.where is not None:
                yield Probe(
                    (*at, "where"),
                    sql.SQL("CREATE INDEX ON {} (").format(copy)
                    + what
                    + sql.SQL(") WHERE ")
                    + user_sql(f"({spec.where})"),
                )
        elif isinstance(spec, DualWrite) and copy is not None:
            for field, mapping in (("set", spec.set), ("reverse", spec.reverse)):
                for column, expr in mapping.items():
                    yield Probe((*at, field, column), _assignment(copy, column, expr))
        elif isinstance(spec, Backfill) and copy is not None:
            # As the backfill's UPDATE reads them: the table by its name, joined to `from`.
            other = self.table(spec.from_.table) if spec.from_ is not None else None
            join: sql.Composable = sql.SQL("")
            if spec.from_ is not None and other is not None:
                join = sql.SQL(" FROM {} WHERE ").format(other) + user_sql(f"({spec.from_.on})")
                yield Probe(
                    (*at, "from", "on"),
                    sql.SQL("EXPLAIN SELECT 1 FROM {}, {} WHERE ").format(copy, other)
                    + user_sql(f"({spec.from_.on})"),
                )
            for column, expr in (spec.set or {}).items():
                yield Probe((*at, "set", column), _assignment(copy, column, expr) + join)
            if spec.where is not None:
                tables = sql.SQL(", ").join([copy, *([other] if other is not None else [])])
                yield Probe(
                    (*at, "where"),
                    sql.SQL("EXPLAIN SELECT 1 FROM {} WHERE ").format(tables)
                    + user_sql(f"({spec.where})"),
                )
        elif isinstance(spec, Verify):
            yield Probe((*at, "sql"), sql.SQL("EXPLAIN ") + user_sql(spec.sql))


def _assignment(copy: sql.Identifier, column: str, expr: str) -> sql.Composed:
    """The expression stored into ``column``, as the trigger and the backfill store it.

    An UPDATE that is only planned checks the names (the row's own columns, named bare), the
    expression's type and its assignment cast to the column's type.
    """
    return (
        sql.SQL("EXPLAIN UPDATE {} SET {} = (").format(copy, sql.Identifier(column))
        + user_sql(expr)
        + sql.SQL(")")
    )
