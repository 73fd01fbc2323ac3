"""Rules about a plan's steps and their order, which no single statement shows.

The plan loader already refuses what cannot run (destructive steps outside cleanup, a backfill
with nothing to compute); these rules find plans that run but do something the author did not
mean. The SQL of ``sql`` steps is checked with the SQL rules as well (see `zdm.lint.planlint`),
which is where a VALIDATE in the same transaction as its NOT VALID can show up: add_check and
add_foreign_key always commit in between.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zdm.ddl.locks import LockMode
from zdm.lint.findings import Severity
from zdm.lint.rollback_rules import (
    RENAME_EXAMPLE,
    REVERSE_EXAMPLE,
    dual_write_writer_unknown,
    rollback_refused,
)
from zdm.plan import (
    AddColumn,
    AddUnique,
    Backfill,
    CreateIndex,
    CreateTable,
    DualWrite,
    Plan,
    PlanStep,
    SetDefault,
    SetNotNull,
    Sql,
    split_qualified,
)

if TYPE_CHECKING:
    from zdm.lint.analysis import Lock

_WORD = re.compile(r'"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*)')
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_$.]*)\s*\(")


@dataclass(frozen=True)
class PlanProblem:
    step: PlanStep
    message: str
    fix: str
    severity: Severity | None = None


@dataclass(frozen=True)
class PlanRule:
    """A rule over a whole plan; examples are plan files (YAML)."""

    id: str
    severity: Severity
    summary: str
    check: Callable[[Plan], Iterator[PlanProblem]]
    bad: tuple[str, ...]
    good: tuple[str, ...]


def _key(plan: Plan, table: str) -> tuple[str, str]:
    return split_qualified(table, plan.schema_)


def expression_columns(expr: str) -> set[str]:
    """Column names an SQL expression may read (the parser's view when pglast is installed)."""
    try:
        from pglast.parser import ParseError, parse_sql

        from zdm.lint.analysis import column_refs
    except ImportError:
        return {
            m.group(1).replace('""', '"') if m.group(1) else m.group(2).lower()
            for m in _WORD.finditer(expr)
        }
    try:
        return set(column_refs(parse_sql(f"SELECT ({expr})")))
    except ParseError:
        return set()


def _filled_columns(plan: Plan, steps: list[PlanStep], index: int, spec: Backfill) -> set[str]:
    """Columns a backfill sets: its ``set``, else the mapping of earlier dual_writes."""
    if spec.set:
        return set(spec.set)
    table = _key(plan, spec.table)
    return {
        column
        for step in steps[:index]
        if isinstance(step.spec, DualWrite) and _key(plan, step.spec.table) == table
        for column in step.spec.set
    }


def _indexed_columns(spec: CreateIndex | AddUnique) -> set[str]:
    if isinstance(spec, AddUnique):
        return set(spec.columns)
    columns = set(spec.column_names) | set(spec.include or [])
    for text in (spec.expression, spec.where):
        if text:
            columns |= expression_columns(text)
    return columns


def index_before_backfill(plan: Plan) -> Iterator[PlanProblem]:
    steps = plan.steps()
    reported: set[int] = set()
    for index, step in enumerate(steps):
        if not isinstance(step.spec, Backfill):
            continue
        table = _key(plan, step.spec.table)
        filled = _filled_columns(plan, steps, index, step.spec)
        for earlier_index, earlier in enumerate(steps[:index]):
            spec = earlier.spec
            if not isinstance(spec, CreateIndex | AddUnique) or earlier_index in reported:
                continue
            if _key(plan, spec.table) != table:
                continue
            shared = sorted(_indexed_columns(spec) & filled)
            if not shared:
                continue
            reported.add(earlier_index)
            yield PlanProblem(
                earlier,
                f"{spec.kind} {spec.name} indexes {', '.join(shared)}, which the backfill at "
                f"{step.key} fills later: every batch of the backfill then also updates this "
                "index (slower batches, more WAL, a bloated index)",
                f"move {spec.kind} after the backfill (the cleanup phase is the usual place): "
                "the build then reads the finished column once",
            )


def _added_columns(plan: Plan, steps: list[PlanStep]) -> dict[tuple[str, str, str], int]:
    """Columns added without a default by add_column -> the step index that added them."""
    added: dict[tuple[str, str, str], int] = {}
    for index, step in enumerate(steps):
        if isinstance(step.spec, AddColumn) and step.spec.column.default is None:
            added[(*_key(plan, step.spec.table), step.spec.column.name)] = index
    return added


def _default_before(
    plan: Plan, steps: list[PlanStep], index: int, column: tuple[str, str, str]
) -> bool:
    return any(
        isinstance(s.spec, SetDefault) and (*_key(plan, s.spec.table), s.spec.column) == column
        for s in steps[:index]
    )


def _dual_written(
    plan: Plan, steps: list[PlanStep], index: int, column: tuple[str, str, str]
) -> bool:
    return any(
        isinstance(s.spec, DualWrite)
        and _key(plan, s.spec.table) == column[:2]
        and column[2] in s.spec.set
        for s in steps[:index]
    )


def backfill_without_dual_write(plan: Plan) -> Iterator[PlanProblem]:
    steps = plan.steps()
    added = _added_columns(plan, steps)
    for index, step in enumerate(steps):
        spec = step.spec
        if not isinstance(spec, Backfill) or not spec.set:
            continue
        table = _key(plan, spec.table)
        missing = [
            name
            for name in spec.set
            if (*table, name) in added
            and added[(*table, name)] < index
            and not _dual_written(plan, steps, index, (*table, name))
            and not _default_before(plan, steps, index, (*table, name))
        ]
        if missing:
            columns = ", ".join(missing)
            yield PlanProblem(
                step,
                f"the backfill fills {columns} of {spec.table}, but no dual_write keeps "
                f"{'it' if len(missing) == 1 else 'them'} up to date: rows the application "
                "inserts or updates during and after the backfill get no value (or a stale one)",
                f"add a dual_write step on {spec.table} with the same expressions before the "
                "backfill (a backfill without set then reuses them), or a set_default when "
                "every new row gets the same value",
            )


def set_not_null_unfilled(plan: Plan) -> Iterator[PlanProblem]:
    steps = plan.steps()
    added = _added_columns(plan, steps)
    for index, step in enumerate(steps):
        spec = step.spec
        if not isinstance(spec, SetNotNull):
            continue
        column = (*_key(plan, spec.table), spec.column)
        if column not in added or added[column] > index:
            continue
        filled = _dual_written(plan, steps, index, column) or _default_before(
            plan, steps, index, column
        )
        for earlier_index, earlier in enumerate(steps[:index]):
            if isinstance(earlier.spec, Backfill) and _key(plan, earlier.spec.table) == column[:2]:
                filled = filled or spec.column in _filled_columns(
                    plan, steps, earlier_index, earlier.spec
                )
        if not filled:
            yield PlanProblem(
                step,
                f"{spec.table}.{spec.column} is added by this plan without a default, and no "
                "dual_write, backfill or set_default gives it a value: existing rows hold NULL, "
                "so validating NOT NULL fails (and so would every insert of the old application)",
                f"fill {spec.column} first: a dual_write with set {{{spec.column}: ...}} and a "
                "backfill (or a set_default for new rows plus a backfill for existing ones)",
            )


def default_volatility(expr: str) -> tuple[list[str], list[str]]:
    """(volatile, unknown) functions a default expression calls."""
    from zdm.lint.volatility import NON_VOLATILE_FUNCTIONS, VOLATILE_FUNCTIONS

    try:
        from pglast import ast
        from pglast.parser import ParseError, parse_sql

        from zdm.lint.analysis import func_name, walk
    except ImportError:
        names = [m.group(1).rpartition(".")[2].lower() for m in _CALL.finditer(expr)]
    else:
        try:
            tree = parse_sql(f"SELECT ({expr})")
        except ParseError:
            return [], []
        names = [func_name(n) for n in walk(tree) if isinstance(n, ast.FuncCall)]
    volatile = [n for n in names if n in VOLATILE_FUNCTIONS]
    unknown = [n for n in names if n not in VOLATILE_FUNCTIONS and n not in NON_VOLATILE_FUNCTIONS]
    return volatile, unknown


def add_column_volatile_default(plan: Plan) -> Iterator[PlanProblem]:
    new: set[tuple[str, str]] = set()
    for step in plan.steps():
        spec = step.spec
        if isinstance(spec, CreateTable):
            new.add(_key(plan, spec.table))
        if not isinstance(spec, AddColumn) or spec.column.default is None:
            continue
        if _key(plan, spec.table) in new:
            continue
        volatile, unknown = default_volatility(spec.column.default)
        if not volatile and not unknown:
            continue
        name, default = spec.column.name, spec.column.default
        fix = (
            f"add {name} without a default, then set_default {default} (catalog only) and a "
            f"backfill with set {{{name}: {default}}} where {name} IS NULL"
        )
        if volatile:
            yield PlanProblem(
                step,
                f"add_column {name} with the volatile default {default} rewrites all of "
                f"{spec.table} under an ACCESS EXCLUSIVE lock (every row needs its own value), "
                "although the step's dry-run says catalog only",
                fix,
            )
        else:
            yield PlanProblem(
                step,
                f"add_column {name} DEFAULT {default} calls {', '.join(unknown)}, whose "
                f"volatility the linter does not know: if it is VOLATILE, all of {spec.table} "
                "is rewritten under an ACCESS EXCLUSIVE lock",
                "make sure the function is STABLE or IMMUTABLE, or " + fix,
                Severity.warning,
            )


def _sql_step_locks(plan: Plan) -> Iterator[tuple[PlanStep, Sql, list[Lock]]]:
    """Each inline `sql` step with the table locks its SQL takes on tables the plan did not
    create (nothing when pglast, the `lint` extra, is missing)."""
    try:
        from zdm.lint.analysis import locks, table_key
        from zdm.lint.source import SqlSyntaxError, parse_source
    except ImportError:  # pragma: no cover - pglast is an optional extra
        return
    new: set[str] = set()
    for step in plan.steps():
        spec = step.spec
        if isinstance(spec, CreateTable):
            new.update({spec.table, table_key(spec.table)})
        if not isinstance(spec, Sql) or spec.up is None:
            continue
        try:
            source = parse_source(spec.up)
        except SqlSyntaxError:
            continue  # reported where the SQL rules run
        except ImportError:  # pglast went missing after all (it is imported lazily)
            return
        yield (
            step,
            spec,
            [
                lock
                for stmt in source.statements
                for lock in locks(stmt.node)
                if lock.key not in new
            ],
        )


def sql_lock_understated(plan: Plan) -> Iterator[PlanProblem]:
    for step, spec, taken in _sql_step_locks(plan):
        if spec.lock is None:
            continue
        declared = LockMode.parse(spec.lock)
        strongest = max(taken, key=lambda lock: lock.mode, default=None)
        if strongest is None or strongest.mode <= declared:
            continue
        effect = (
            "zdm runs it without a short lock_timeout, so while it waits every query on "
            f"{strongest.table} queues behind it"
            if strongest.mode.blocks_app and not declared.blocks_app
            else "the dry-run and the retry policy work from the wrong lock"
        )
        yield PlanProblem(
            step,
            f"this sql step declares lock: {declared.sql_name}, but its SQL takes "
            f"{strongest.mode.sql_name} on {strongest.table}: {effect}",
            f"declare lock: {strongest.mode.sql_name} (or leave lock out: zdm then assumes "
            "ACCESS EXCLUSIVE)",
        )


def _named(table: str, declared: list[tuple[str, str]]) -> bool:
    """Whether `table`, as the SQL writes it, is one of `declared` (schema, name); a name the SQL
    leaves unqualified resolves through the search path, so it matches in any schema."""
    schema, _, name = table.rpartition(".")
    return any(n == name and (not schema or s == schema) for s, n in declared)


def sql_tables_undeclared(plan: Plan) -> Iterator[PlanProblem]:
    for step, spec, taken in _sql_step_locks(plan):
        declared = [_key(plan, t) for t in spec.tables]
        missing = sorted(
            {
                lock.table
                for lock in taken
                if lock.mode.blocks_app
                and " " not in lock.table  # a description, not a name
                and not _named(lock.table, declared)
            }
        )
        if not missing:
            continue
        yield PlanProblem(
            step,
            f"this sql step locks {', '.join(missing)} in a mode the application waits on, but"
            " does not name it in `tables`: zdm cannot wait, without queueing, for long"
            " transactions holding it, so the application may stall for a lock_timeout on"
            " every attempt, and lock retries cannot say who blocked them",
            f"add tables: [{', '.join(missing)}]",
        )


_USERS_PHONE = """\
version: 1
phases:
  additive:
    - add_column: {table: users, column: {name: phone, type: text}}
"""

PLAN_RULES: tuple[PlanRule, ...] = (
    PlanRule(
        "add-column-volatile-default",
        Severity.error,
        "add_column with a volatile default rewrites the table",
        add_column_volatile_default,
        bad=(
            "version: 1\nphases:\n  additive:\n    - add_column: {table: users, column: "
            "{name: token, type: uuid, default: gen_random_uuid()}}\n",
        ),
        good=(
            "version: 1\nphases:\n  additive:\n    - add_column: {table: users, column: "
            "{name: created_at, type: timestamptz, nullable: false, default: now()}}\n",
        ),
    ),
    PlanRule(
        "index-before-backfill",
        Severity.warning,
        "index on a column built before the backfill that fills it",
        index_before_backfill,
        bad=(
            _USERS_PHONE
            + "    - create_index: {table: users, name: users_phone_idx, columns: [phone]}\n"
            "  dual_write:\n"
            "    - dual_write: {table: users, set: {phone: \"contact->>'phone'\"}}\n"
            "  backfill:\n"
            "    - backfill: {table: users}\n",
        ),
        good=(
            _USERS_PHONE + "  dual_write:\n"
            "    - dual_write: {table: users, set: {phone: \"contact->>'phone'\"}}\n"
            "  backfill:\n"
            "    - backfill: {table: users}\n"
            "  cleanup:\n"
            "    - create_index: {table: users, name: users_phone_idx, columns: [phone]}\n",
        ),
    ),
    PlanRule(
        "backfill-without-dual-write",
        Severity.warning,
        "backfill of a new column that no dual_write keeps up to date",
        backfill_without_dual_write,
        bad=(
            _USERS_PHONE + "  backfill:\n"
            "    - backfill: {table: users, set: {phone: \"contact->>'phone'\"}}\n",
        ),
        good=(
            _USERS_PHONE + "  dual_write:\n"
            "    - dual_write: {table: users, set: {phone: \"contact->>'phone'\"}}\n"
            "  backfill:\n"
            "    - backfill: {table: users}\n",
            _USERS_PHONE + "    - set_default: {table: users, column: phone, default: \"''\"}\n"
            "  backfill:\n"
            "    - backfill: {table: users, set: {phone: \"''\"}, where: phone IS NULL}\n",
        ),
    ),
    PlanRule(
        "set-not-null-unfilled",
        Severity.error,
        "set_not_null on a new column that nothing fills",
        set_not_null_unfilled,
        bad=(_USERS_PHONE + "  cleanup:\n    - set_not_null: {table: users, column: phone}\n",),
        good=(
            _USERS_PHONE + "  dual_write:\n"
            "    - dual_write: {table: users, set: {phone: \"contact->>'phone'\"}}\n"
            "  backfill:\n"
            "    - backfill: {table: users}\n"
            "  cleanup:\n"
            "    - set_not_null: {table: users, column: phone}\n",
        ),
    ),
    PlanRule(
        "sql-lock-understated",
        Severity.error,
        "sql step declares a weaker lock than its SQL takes",
        sql_lock_understated,
        bad=(
            "version: 1\nphases:\n  cleanup:\n    - sql:\n"
            "        up: ALTER TABLE users DROP COLUMN legacy\n"
            "        lock: SHARE UPDATE EXCLUSIVE\n",
        ),
        good=(
            "version: 1\nphases:\n  dual_read:\n    - sql:\n"
            "        up: ANALYZE users\n"
            "        lock: SHARE UPDATE EXCLUSIVE\n",
        ),
    ),
    PlanRule(
        "sql-tables-undeclared",
        Severity.warning,
        "sql step locks a table the application waits on without naming it in `tables`",
        sql_tables_undeclared,
        bad=(
            "version: 1\nphases:\n  cleanup:\n    - sql:\n"
            "        up: ALTER TABLE users DROP COLUMN legacy\n",
        ),
        good=(
            "version: 1\nphases:\n  cleanup:\n    - sql:\n"
            "        up: ALTER TABLE users DROP COLUMN legacy\n"
            "        tables: [users]\n",
            "version: 1\nphases:\n  dual_read:\n    - sql:\n"
            "        up: ANALYZE users\n"
            "        lock: SHARE UPDATE EXCLUSIVE\n",
        ),
    ),
    PlanRule(
        "rollback-refused",
        Severity.warning,
        "step order that zdm rollback cannot undo",
        rollback_refused,
        bad=(
            RENAME_EXAMPLE + "    - rename_column: {table: people, column: name, to: legacy}\n"
            "    - drop_dual_write: {table: people}\n",
            "version: 1\nphases:\n  cleanup:\n    - unexpose: {schema: app_v2}\n",
        ),
        good=(
            RENAME_EXAMPLE + "    - drop_dual_write: {table: people}\n"
            "    - rename_column: {table: people, column: name, to: legacy}\n",
        ),
    ),
    PlanRule(
        "dual-write-writer-unknown",
        Severity.warning,
        "reverse mapping with no way for the new version to be known",
        dual_write_writer_unknown,
        bad=(REVERSE_EXAMPLE,),
        good=(
            REVERSE_EXAMPLE + "  dual_read:\n    - expose:\n        schema: app_v2\n"
            "        tables: [{table: reviews, hide: [rating], rename: {rating_new: rating}}]\n",
        ),
    ),
)

PLAN_RULE_IDS = frozenset(rule.id for rule in PLAN_RULES)
