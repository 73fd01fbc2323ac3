"""Expansion of high-level ``changes`` into the five phases of ordinary steps.

A pure function of the plan and, for a change through a copy column, of what the live catalog
says about the column the copy replaces (``ColumnFacts``, read by the engine). The result is a
plan any person could have written by hand, so checkpoints, the lock policy, the dry-run,
rollback and lint apply to it unchanged.

How changes and hand-written steps combine: the changes expand first, in their order, and each
phase's own steps (``phases:``) follow the expanded steps of that phase.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zdm.plan.changes import (
    AddColumnChange,
    AddPrimaryKeyChange,
    AlterColumn,
    ChangeSpec,
    DropColumnChange,
    DropConstraintChange,
    ReferencesSpec,
    RenameColumnChange,
    RenameConstraintChange,
    RenameTableChange,
    SetCommentChange,
    SetReplicaIdentityChange,
)
from zdm.plan.messages import Finding, Loc
from zdm.plan.model import PHASES, Phases, Plan
from zdm.plan.names import bare_name, split_qualified, truncate_identifier
from zdm.plan.steps import (
    AddCheck,
    AddColumn,
    AddForeignKey,
    AddPrimaryKey,
    AddUnique,
    Backfill,
    CreateIndex,
    DropColumn,
    DropConstraint,
    DropDefault,
    DropDualWrite,
    DropNotNull,
    DualWrite,
    Expose,
    ExposeTable,
    ForeignRef,
    IndexColumn,
    NewColumn,
    RenameColumn,
    RenameConstraint,
    RenameTable,
    SetComment,
    SetDefault,
    SetNotNull,
    SetReplicaIdentity,
    SetType,
    Sql,
    StepSpec,
    Unexpose,
    varchar_length,
)

COPY_PREFIX = "_zdm_new_"
"""The copy column of ``c`` is ``_zdm_new_c``; the copies of its indexes and constraints are
named the same way until the swap gives them their old names back."""


@dataclass(frozen=True)
class IndexFact:
    """A plain index (no expression, predicate, non-default opclass or sort order) on the
    column, which a copy can be given by a ``create_index`` of the same shape."""

    name: str
    columns: tuple[str, ...]
    unique: bool
    method: str


@dataclass(frozen=True)
class ForeignKeyFact:
    """A foreign key from the column (and maybe others) to another table."""

    name: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str | None


@dataclass(frozen=True)
class ColumnFacts:
    """What a copy of a column must carry over, read from the live catalog."""

    type: str
    not_null: bool
    default: str | None
    comment: str | None
    indexes: tuple[IndexFact, ...] = ()
    uniques: tuple[tuple[str, tuple[str, ...]], ...] = ()
    foreign_keys: tuple[ForeignKeyFact, ...] = ()
    not_null_name: str | None = None
    """The name of the column's not-null constraint (PostgreSQL 18 names them), which the
    copy's takes at the swap."""
    primary_key: tuple[str, tuple[str, ...]] | None = None
    """The primary key (name, columns) the column is in."""
    referenced_by: tuple[ReferenceFact, ...] = ()
    sequence: str | None = None
    """The sequence that fills the column (serial or identity), qualified."""
    identity: str | None = None
    """``a`` (ALWAYS) or ``d`` (BY DEFAULT) for an identity column."""
    checks: tuple[str, ...] = ()
    """CHECK constraints that use the column: a copy cannot carry them (their text names the
    column), so only the change's own ``check`` may be among them."""
    refusals: tuple[str, ...] = ()
    partitioned: bool = False
    """The table is partitioned: the copy's indexes and constraints have one on each partition
    too, which the swap renames with them."""
    """What cannot be carried over to a copy, in words (a check, a view, a referencing key)."""


@dataclass(frozen=True)
class ReferenceFact:
    """A single-column foreign key of a table (``table``, qualified) that references the
    column."""

    name: str
    table: str
    columns: tuple[str, ...]
    on_delete: str | None


FactReader = Callable[[str, str, str], ColumnFacts | None]
"""(schema, table, column) -> the column's facts, or None when the column does not exist."""


def offline_facts(schema: str, table: str, column: str) -> ColumnFacts:
    """Facts for checking a plan without a database (`zdm lint`, `zdm validate` without
    --dsn): a column of unknown type with nothing to carry over. Never used to run a plan."""
    return ColumnFacts(type="unknown", not_null=False, default=None, comment=None)


class ExpansionError(Exception):
    """A change that cannot be expanded; carries located findings."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__(findings)
        self.findings = findings


@dataclass
class _Out:
    """The five phases being built, plus the version views every change contributes to."""

    steps: dict[str, list[tuple[StepSpec, int]]] = field(
        default_factory=lambda: {phase: [] for phase in PHASES}
    )
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    """table -> ExposeTable fields (hide, rename, view), merged over the changes."""
    view_origin: int | None = None

    def add(self, phase: str, index: int, *steps: StepSpec) -> None:
        self.steps[phase].extend((step, index) for step in steps)

    def view(self, index: int, table: str) -> dict[str, Any]:
        if self.view_origin is None:
            self.view_origin = index
        return self.views.setdefault(table, {"table": table, "hide": [], "rename": {}})


def q(name: str) -> str:
    """A quoted identifier, for the SQL text of an expanded step."""
    return '"' + name.replace('"', '""') + '"'


def copy_name(name: str) -> str:
    return truncate_identifier(COPY_PREFIX + name)


def default_version_schema(plan_name: str) -> str:
    """``zdm_`` and the plan's name, lower-cased, other characters made ``_``."""
    return truncate_identifier("zdm_" + re.sub(r"[^a-z0-9_]", "_", plan_name.lower()))


def _trigger_name(table: str, column: str) -> str:
    return truncate_identifier(f"zdm_dw_{bare_name(table)}_{column}")


def expand(plan: Plan, plan_name: str, facts: FactReader | None = None) -> tuple[Plan, list[int]]:
    """The plan with its changes expanded into its phases, and for each step of the result (in
    execution order) the index of the change it came from, or -1 for a hand-written step.

    Raises ExpansionError naming each change that cannot be expanded."""
    if not plan.changes:
        steps = plan.steps()
        return plan, [-1] * len(steps)
    out = _Out()
    findings: list[Finding] = []
    seen: dict[tuple[str, str, str], int] = {}
    for index, change in enumerate(plan.changes):
        for column in _columns_of(change):
            key = (*split_qualified(_table_of(change), plan.schema_), column)
            if key in seen:
                findings.append(
                    Finding(
                        ("changes", index, change.kind),
                        f"column {column!r} is changed by changes[{seen[key]}] too; give one "
                        "change all it needs (alter_column takes name, type, nullable, "
                        "default, constraints and comment together)",
                    )
                )
            seen.setdefault(key, index)
    for index, change in enumerate(plan.changes):
        try:
            _EXPANDERS[type(change)](change, index, plan, out, facts)
        except _Refused as refused:
            findings.append(Finding(("changes", index, change.kind, *refused.loc), str(refused)))
    if findings:
        raise ExpansionError(findings)
    if out.views:
        assert out.view_origin is not None
        schema = plan.version_schema or default_version_schema(plan_name)
        tables = [
            ExposeTable(
                table=v["table"],
                view=v.get("view"),
                hide=sorted(set(v["hide"])),
                rename=v["rename"],
            )
            for v in out.views.values()
        ]
        # The views show the new shape once every copy is filled. They go last in cleanup:
        # they keep working across the swaps and renames (views name columns and tables by
        # number), so the new version never meets a half-changed table.
        out.steps["dual_read"].append((Expose(schema=schema, tables=tables), out.view_origin))
        out.steps["cleanup"].append((Unexpose(schema=schema), out.view_origin))
    phases: dict[str, list[StepSpec]] = {}
    origins: list[int] = []
    for phase in PHASES:
        written = plan.phases.of(phase)  # type: ignore[arg-type]
        phases[phase] = [step for step, _ in out.steps[phase]] + list(written)
        origins += [origin for _, origin in out.steps[phase]] + [-1] * len(written)
    expanded = plan.model_copy(update={"changes": [], "phases": Phases(**phases)})
    return expanded, origins


def _table_of(change: ChangeSpec) -> str:
    """The table a change acts on (``from`` for rename_table)."""
    if isinstance(change, RenameTableChange):
        return change.from_
    table: str = getattr(change, "table")  # noqa: B009 - every other kind has one
    return table


def _columns_of(change: ChangeSpec) -> list[str]:
    """The existing columns a change alters, renames or drops."""
    if isinstance(change, AlterColumn | DropColumnChange):
        return [change.column]
    if isinstance(change, RenameColumnChange):
        return [change.from_]
    if isinstance(change, DropConstraintChange) and change.column is not None:
        return [change.column]
    return []


class _Refused(Exception):
    def __init__(self, message: str, *loc: str) -> None:
        super().__init__(message)
        self.loc: Loc = loc


# --- alter_column -------------------------------------------------------------------------


def _alter_column(
    change: AlterColumn, index: int, plan: Plan, out: _Out, facts: FactReader | None
) -> None:
    constrains = change.unique or change.check or change.references or change.nullable is False
    if (
        change.type is not None
        and not (change.up is not None and constrains)
        and not change.transforms
    ):
        known = _read_facts(change.table, change.column, plan, facts, _own(change), keys=True)
        if known.primary_key is not None and not _widens(known.type, change.type):
            _swap_primary_key(change, index, plan, out, known)
            return
        if _widens(known.type, change.type):
            # The old version still reads and writes the column: a wider type takes all it
            # writes, and PostgreSQL changes it without a rewrite (indexes stay valid).
            _retype_in_place(change, index, plan, known.type, out)
            _alter_in_place(change, index, out)
            return
    if change.copies:
        offline = facts is offline_facts
        if change.type is not None and change.down is None and not offline:
            why = (
                f"'up' computes new values of {change.column!r}"
                if change.transforms
                else f"changing the type of {change.column!r} to {change.type} rewrites the table"
            )
            raise _Refused(
                f"{why}, so it goes through a copy column, which needs 'down': the "
                "old column's value (new -> old) for rows the new version writes, e.g. the "
                "new value cast back to the old type",
                "up" if change.transforms else "type",
            )
        _alter_through_copy(change, index, plan, out, facts)
    else:
        _alter_in_place(change, index, out)


_BIGINT = {"bigint", "int8"}
_NARROW_INTEGERS = {"integer", "smallint", "int", "int4", "int2"}


def _swap_primary_key(
    change: AlterColumn, index: int, plan: Plan, out: _Out, known: ColumnFacts
) -> None:
    """integer -> bigint of a one-column primary key: a copy filled by a trigger and a backfill,
    its unique index built concurrently, every referencing foreign key added again on the copy
    (NOT VALID, then validated), and one short swap of key, keys and sequence."""
    table, column = change.table, change.column
    assert known.primary_key is not None
    pk_name, pk_columns = known.primary_key
    others = set(change.model_fields_set) - {"table", "column", "type"}
    problems = []
    if pk_columns != (column,):
        problems.append(f"the primary key {pk_name} has more columns than {column!r}")
    if known.type not in _NARROW_INTEGERS or change.type.strip().lower() not in _BIGINT:  # type: ignore[union-attr]
        problems.append(f"only integer -> bigint is swapped, not {known.type} -> {change.type}")
    if others:
        problems.append(
            f"a primary key's type change takes only 'type', not {', '.join(sorted(others))}"
        )
    problems += [r for r in known.refusals]
    # A change of a referencing column would copy the foreign key that the swap drops.
    referencing = {
        (*split_qualified(ref.table, plan.schema_), c)
        for ref in known.referenced_by
        for c in ref.columns
    }
    others_near = [
        i
        for i, other in enumerate(plan.changes)
        if any(
            (*split_qualified(_table_of(other), plan.schema_), c) in referencing
            for c in _columns_of(other)
        )
    ]
    if others_near:
        problems.append(
            f"changes[{others_near[0]}] changes a column that references it: the key swap drops "
            "and renames that foreign key, so change the column in a later plan"
        )
    if problems:
        raise _Refused(
            f"column {column!r} of {table} is the primary key: " + "; ".join(problems), "type"
        )
    copy = copy_name(column)
    trigger = _trigger_name(table, column)
    temp_pk = copy_name(pk_name)
    out.add("additive", index, AddColumn(table=table, column=NewColumn(name=copy, type="bigint")))
    out.add("dual_write", index, DualWrite(table=table, name=trigger, set={copy: q(column)}))
    out.add("backfill", index, Backfill(table=table, set={copy: q(column)}))
    out.add(
        "dual_read",
        index,
        CreateIndex(table=table, name=temp_pk, columns=[copy], unique=True),
    )
    for ref in known.referenced_by:
        out.add(
            "dual_read",
            index,
            AddForeignKey(
                table=ref.table,
                name=copy_name(ref.name),
                columns=list(ref.columns),
                references=ForeignRef(table=table, columns=[copy]),
                on_delete=ref.on_delete,  # type: ignore[arg-type]
            ),
        )
    # The trigger fills the copy of every new row until the swap: NOT NULL holds meanwhile.
    out.add("cleanup", index, SetNotNull(table=table, column=copy))
    t = _qual(plan, table)
    function = _sibling(plan, table, trigger)
    ref_tables = list(dict.fromkeys(ref.table for ref in known.referenced_by if ref.table != table))
    # An application write to a referencing table locks the key's table after it (the foreign
    # key's check): the swap locks in the same order, so it never holds the key's table while
    # it waits for such a writer, which would wait for it in turn (a deadlock the application
    # would be told of once a retry's lock_timeout outgrew deadlock_timeout).
    locked = ", ".join([*(_qual(plan, name) for name in ref_tables), t])
    swap = [f"LOCK TABLE {locked} IN ACCESS EXCLUSIVE MODE"] if ref_tables else []
    swap += [f"DROP TRIGGER {q(trigger)} ON {t}", f"DROP FUNCTION {function}()"]
    seq = known.sequence
    if seq is not None and known.identity:
        # The identity's sequence goes with the old column: carry its position over.
        swap.append(
            "SELECT set_config('zdm.key_sequence', (SELECT last_value || ',' || is_called"
            f" FROM {_table(seq)}), true)"
        )
    elif seq is not None:
        swap.append(f"ALTER SEQUENCE {_table(seq)} OWNED BY NONE")
    swap += [
        f"ALTER TABLE {_qual(plan, ref.table)} DROP CONSTRAINT {q(ref.name)}"
        for ref in known.referenced_by
    ]
    swap += [
        f"ALTER TABLE {t} DROP CONSTRAINT {q(pk_name)}",
        f"ALTER TABLE {t} DROP COLUMN {q(column)}",
        f"ALTER TABLE {t} RENAME COLUMN {q(copy)} TO {q(column)}",
        f"ALTER TABLE {t} ADD CONSTRAINT {q(pk_name)} PRIMARY KEY USING INDEX {q(temp_pk)}",
    ]
    swap += [
        f"ALTER TABLE {_qual(plan, ref.table)} RENAME CONSTRAINT {q(copy_name(ref.name))} TO {q(ref.name)}"
        for ref in known.referenced_by
    ]
    if seq is not None and known.identity:
        kind = "ALWAYS" if known.identity == "a" else "BY DEFAULT"
        swap += [
            f"ALTER TABLE {t} ALTER COLUMN {q(column)} ADD GENERATED {kind} AS IDENTITY",
            f"SELECT setval(pg_get_serial_sequence({_literal(t)}, {_literal(column)}),"
            " split_part(current_setting('zdm.key_sequence'), ',', 1)::bigint,"
            " split_part(current_setting('zdm.key_sequence'), ',', 2)::boolean)",
        ]
    elif seq is not None:
        swap += [
            f"ALTER SEQUENCE {_table(seq)} AS bigint",
            f"ALTER TABLE {t} ALTER COLUMN {q(column)} SET DEFAULT nextval({_literal(_table(seq))}::regclass)",
            f"ALTER SEQUENCE {_table(seq)} OWNED BY {t}.{q(column)}",
        ]
    if known.not_null_name is not None:
        swap.append(_rename_not_null(t, column, known.not_null_name))
    tables = [table, *ref_tables]
    out.add(
        "cleanup",
        index,
        Sql(up=";\n".join(swap) + ";\n", lock="ACCESS EXCLUSIVE", tables=tables),
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _own(change: AlterColumn) -> set[str]:
    return {spec.name for spec in (change.unique, change.check, change.references) if spec}


_VARCHAR = re.compile(r"^\s*(?:character\s+varying|varchar)\s*(?:\(\s*(\d+)\s*\))?\s*$", re.I)


def _widens(old: str, new: str) -> bool:
    """Whether PostgreSQL changes type ``old`` to ``new`` without rewriting the table or its
    indexes: the same type, varchar to a longer or unbounded varchar, varchar to text."""
    if " ".join(old.lower().split()) == " ".join(new.lower().split()):
        return True
    before = _VARCHAR.match(old)
    if before is None:
        return False
    if new.strip().lower() == "text":
        return True
    after = _VARCHAR.match(new)
    if after is None:
        return False
    if after.group(1) is None:
        return True
    return before.group(1) is not None and int(after.group(1)) >= int(before.group(1))


def _retype_in_place(change: AlterColumn, index: int, plan: Plan, old: str, out: _Out) -> None:
    """A varchar widened (or made text) in place; the same type again changes nothing. The
    step does not depend on `old`, so the plan expands the same after it ran (a resume)."""
    assert change.type is not None
    try:
        varchar_length(change.type)
    except ValueError:
        return  # the column has the type already
    out.add("additive", index, SetType(table=change.table, column=change.column, type=change.type))


def _alter_in_place(change: AlterColumn, index: int, out: _Out) -> None:
    table, column = change.table, change.column
    final = change.name or column
    if change.sets_comment:
        out.add("additive", index, SetComment(table=table, column=column, comment=change.comment))
    if change.default is not None:
        out.add("additive", index, SetDefault(table=table, column=column, default=change.default))
    if change.name is not None:
        out.view(index, table)["rename"][column] = change.name
    if change.sets_default and change.default is None:
        out.add("cleanup", index, DropDefault(table=table, column=column))
    if change.nullable is True:
        out.add("cleanup", index, DropNotNull(table=table, column=column))
    elif change.nullable is False:
        out.add("cleanup", index, SetNotNull(table=table, column=column))
    if change.name is not None:
        out.add("cleanup", index, RenameColumn(table=table, column=column, to=change.name))
    _add_constraints(change, index, out, final)


def _add_constraints(change: AlterColumn, index: int, out: _Out, column: str) -> None:
    """The change's own constraints, on the column under its final name, in cleanup: the old
    version, which may still write values they refuse, is gone by then."""
    table = change.table
    if change.unique is not None:
        out.add("cleanup", index, AddUnique(table=table, name=change.unique.name, columns=[column]))
    if change.check is not None:
        out.add(
            "cleanup",
            index,
            AddCheck(table=table, name=change.check.name, check=change.check.constraint),
        )
    if change.references is not None:
        out.add("cleanup", index, _foreign_key(table, column, change.references))


def _key_refusals(found: ColumnFacts) -> list[str]:
    """What a copy of a key column cannot carry over (only the bigint swap handles keys)."""
    refusals = []
    if found.primary_key is not None:
        refusals.append(f"it is in the primary key {found.primary_key[0]}")
    refusals += [
        f"foreign key {ref.name} of {ref.table} references it" for ref in found.referenced_by
    ]
    if found.identity:
        refusals.append("it is an identity column")
    return refusals


def _read_facts(
    table: str,
    column: str,
    plan: Plan,
    facts: FactReader | None,
    skip: set[str],
    *,
    keys: bool = False,
) -> ColumnFacts:
    if facts is None:
        raise _Refused(
            f"changing column {column!r} of {table} needs the live catalog (whether its type "
            "changes without a rewrite; the default, NOT NULL, indexes, constraints and comment "
            "a copy must carry over): give a connection (--dsn, ZDM_DSN)",
            "column",
        )
    schema, name = split_qualified(table, plan.schema_)
    found = facts(schema, name, column)
    if found is None:
        raise _Refused(f"table {schema}.{name} has no column {column!r}", "column")
    refusals = list(found.refusals)
    if not keys:
        refusals += _key_refusals(found)
    refusals += [
        f"check constraint {check} uses it (drop it first and restate it as this change's 'check')"
        for check in found.checks
        if check not in skip
    ]
    if refusals:
        raise _Refused(
            f"column {column!r} of {table} cannot be copied: " + "; ".join(refusals),
            "column",
        )
    return found


@dataclass(frozen=True)
class _Copy:
    """A column replaced by a copy kept in step both ways and swapped in at cleanup."""

    table: str
    column: str
    final: str
    type: str | None
    up: str | None
    down: str | None
    skip: frozenset[str] = frozenset()
    """Constraints and indexes of the column the copy does not get (the change adds or drops
    them itself)."""
    default: tuple[str | None] | None = None
    """The copy's default, when the change gives one (``(None,)``: none)."""
    comment: tuple[str | None] | None = None
    nullable: bool | None = None


def _alter_through_copy(
    change: AlterColumn, index: int, plan: Plan, out: _Out, facts: FactReader | None
) -> None:
    own = _own(change)
    copy = _Copy(
        table=change.table,
        column=change.column,
        final=change.name or change.column,
        type=change.type,
        up=change.up,
        down=change.down,
        skip=frozenset(own),
        default=(change.default,) if change.sets_default else None,
        comment=(change.comment,) if change.sets_comment else None,
        nullable=change.nullable,
    )
    _copy_column(copy, index, plan, out, facts)
    _add_constraints(change, index, out, copy.final)


def _written_steps_on(plan: Plan, table: str, column: str) -> list[str]:
    """The plan's own steps that name `column` of `table`: they would act on the old column,
    which the swap drops (an index built on it is lost with it)."""
    key = split_qualified(table, plan.schema_)
    found = []
    for phase, i, step in plan.iter_steps():
        if split_qualified(getattr(step, "table", "") or "", plan.schema_) != key:
            continue
        columns = step.column_names if isinstance(step, CreateIndex) else None
        named = {getattr(step, "column", None), *(columns or getattr(step, "columns", None) or [])}
        if column in named:
            found.append(f"phases.{phase}[{i}] {step.kind}")
    return found


def _copy_column(spec: _Copy, index: int, plan: Plan, out: _Out, facts: FactReader | None) -> None:
    table, column = spec.table, spec.column
    clashes = _written_steps_on(plan, table, column)
    if clashes:
        raise _Refused(
            f"the change replaces column {column!r} of {table} by a copy, but "
            f"{', '.join(clashes)} act on the old column, which the swap drops; make that part "
            "of this change (default, nullable, unique, check, references) or a later plan",
            "column",
        )
    known = _read_facts(table, column, plan, facts, set(spec.skip))
    copy = copy_name(column)
    new_type = spec.type or known.type
    up = spec.up or (f"CAST({q(column)} AS {spec.type})" if spec.type else q(column))
    # `down` names the column, meaning its new value: a subquery gives that name the copy's
    # value, and every other name still reads the row.
    down = spec.down or q(column)
    reverse = f"(SELECT ({down}) FROM (SELECT {q(copy)} AS {q(column)}) AS zdm_new)"
    trigger = _trigger_name(table, column)

    out.add("additive", index, AddColumn(table=table, column=NewColumn(name=copy, type=new_type)))
    comment = spec.comment[0] if spec.comment is not None else known.comment
    if comment is not None:
        out.add("additive", index, SetComment(table=table, column=copy, comment=comment))
    out.add(
        "dual_write",
        index,
        DualWrite(table=table, name=trigger, set={copy: up}, reverse={column: reverse}),
    )
    out.add("backfill", index, Backfill(table=table, set={copy: up}))

    renames: list[str] = []

    def swapped(names: tuple[str, ...]) -> list[str]:
        return [copy if name == column else name for name in names]

    for idx in known.indexes:
        if idx.name in spec.skip:
            continue
        temp = copy_name(idx.name)
        out.add(
            "dual_read",
            index,
            CreateIndex(
                table=table,
                name=temp,
                columns=list[str | IndexColumn](swapped(idx.columns)),
                unique=idx.unique,
                method=idx.method,  # type: ignore[arg-type]
            ),
        )
        renames.append(f"ALTER INDEX {_sibling(plan, table, temp)} RENAME TO {q(idx.name)}")
        if known.partitioned:
            renames.append(_rename_partition_indexes(_sibling(plan, table, idx.name)))
    for name, cols in known.uniques:
        if name in spec.skip:
            continue
        temp = copy_name(name)
        out.add("dual_read", index, AddUnique(table=table, name=temp, columns=swapped(cols)))
        renames.append(f"ALTER TABLE {_qual(plan, table)} RENAME CONSTRAINT {q(temp)} TO {q(name)}")
        if known.partitioned:
            renames.append(_rename_partition_indexes(_sibling(plan, table, name)))
    for fk in known.foreign_keys:
        if fk.name in spec.skip:
            continue
        temp = copy_name(fk.name)
        out.add(
            "dual_read",
            index,
            AddForeignKey(
                table=table,
                name=temp,
                columns=swapped(fk.columns),
                references=ForeignRef(table=fk.ref_table, columns=list(fk.ref_columns)),
                on_delete=fk.on_delete,  # type: ignore[arg-type]
            ),
        )
        renames.append(
            f"ALTER TABLE {_qual(plan, table)} RENAME CONSTRAINT {q(temp)} TO {q(fk.name)}"
        )
        if known.partitioned:
            renames.append(_rename_partition_foreign_keys(_qual(plan, table), fk.name))
    view = out.view(index, table)
    view["hide"].append(column)
    view["rename"][copy] = spec.final

    # The trigger keeps the copy filled until the swap, which drops it in the same transaction:
    # no write between them leaves the copy, or the old column, without a value.
    not_null = known.not_null if spec.nullable is None else not spec.nullable
    if not_null:
        out.add("cleanup", index, SetNotNull(table=table, column=copy))
    if not_null:
        # The copy's not-null constraint (PostgreSQL 18) takes the old one's name, or the name
        # PostgreSQL gives a new one: a later copy of the column must find its own name free.
        name = known.not_null_name or truncate_identifier(
            f"{bare_name(table)}_{spec.final}_not_null"
        )
        renames.append(_rename_not_null(_qual(plan, table), spec.final, name))
    default = spec.default[0] if spec.default is not None else known.default
    t = _qual(plan, table)
    swap = [
        f"DROP TRIGGER {q(trigger)} ON {t}",
        f"DROP FUNCTION {_sibling(plan, table, trigger)}()",
        f"ALTER TABLE {t} DROP COLUMN {q(column)}",
        f"ALTER TABLE {t} RENAME COLUMN {q(copy)} TO {q(spec.final)}",
        *renames,
    ]
    if default is not None:
        # Set only now: a default on the copy would stop the trigger filling it.
        swap.append(f"ALTER TABLE {t} ALTER COLUMN {q(spec.final)} SET DEFAULT {default}")
    out.add(
        "cleanup",
        index,
        Sql(up=";\n".join(swap) + ";\n", lock="ACCESS EXCLUSIVE", tables=[table]),
    )


def _rename_partition_indexes(index: str) -> str:
    """A DO block giving the partitions' own indexes of `index` (quoted and qualified, by now
    under its old name; a unique constraint's index renames the constraint with it) their names
    without the copy prefix (PostgreSQL's own name for a middle level's index has it inside),
    where those are free: a later copy of the same column must find its own names free."""
    prefix = COPY_PREFIX.replace("_", "\\_")
    bare = f"replace(r.relname, {_literal(COPY_PREFIX)}, '')"
    return (
        "DO $zdm$ DECLARE r record; BEGIN FOR r IN SELECT c.oid::regclass AS it, c.relname,"
        f" c.relnamespace FROM pg_partition_tree({_literal(index)}::regclass) t JOIN pg_class c"
        f" ON c.oid = t.relid WHERE t.level > 0 AND c.relname LIKE '%{prefix}%' LOOP"
        " IF NOT EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = r.relnamespace AND"
        f" relname = {bare}) THEN"
        f" EXECUTE format('ALTER INDEX %s RENAME TO %I', r.it, {bare});"
        " END IF; END LOOP; END $zdm$"
    )


def _rename_partition_foreign_keys(table: str, name: str) -> str:
    """A DO block giving the partitions' own copies of foreign key `name` of `table` (quoted and
    qualified) the old name, where it is free on that partition."""
    temp, final = _literal(copy_name(name)), _literal(name)
    return (
        "DO $zdm$ DECLARE r record; BEGIN FOR r IN SELECT k.conrelid::regclass AS t FROM"
        f" pg_partition_tree({_literal(table)}::regclass) t JOIN pg_constraint k"
        f" ON k.conrelid = t.relid WHERE t.level > 0 AND k.contype = 'f' AND k.conname = {temp}"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint o WHERE o.conrelid = t.relid"
        f" AND o.conname = {final}) LOOP"
        f" EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', r.t, {temp}, {final});"
        " END LOOP; END $zdm$"
    )


def _rename_not_null(table: str, column: str, name: str) -> str:
    """A DO block giving the column's not-null constraint (whatever set_not_null named it on
    the copy) the old column's name; `table` is the quoted, qualified table."""
    rel, lit, col = f"{_literal(table)}::regclass", _literal(name), _literal(column)
    return (
        "DO $zdm$ DECLARE old name; BEGIN"
        f" SELECT k.conname INTO old FROM pg_constraint k JOIN pg_attribute a"
        f" ON a.attrelid = k.conrelid AND k.conkey = ARRAY[a.attnum]"
        f" WHERE k.conrelid = {rel} AND k.contype = 'n' AND a.attname = {col};"
        f" IF old IS NOT NULL AND old <> {lit} THEN"
        f" EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', {rel}, old, {lit});"
        " END IF; END $zdm$"
    )


def _table(table: str) -> str:
    return ".".join(q(part) for part in table.split("."))


def _qual(plan: Plan, table: str) -> str:
    """The quoted table, qualified with the plan's schema when the plan does not."""
    schema, name = split_qualified(table, plan.schema_)
    return f"{q(schema)}.{q(name)}"


def _sibling(plan: Plan, table: str, name: str) -> str:
    schema, _ = split_qualified(table, plan.schema_)
    return f"{q(schema)}.{q(name)}"


# --- the simpler kinds --------------------------------------------------------------------


def _rename_column(
    change: RenameColumnChange, index: int, plan: Plan, out: _Out, facts: FactReader | None
) -> None:
    out.view(index, change.table)["rename"][change.from_] = change.to
    out.add("cleanup", index, RenameColumn(table=change.table, column=change.from_, to=change.to))


def _rename_table(
    change: RenameTableChange, index: int, plan: Plan, out: _Out, facts: FactReader | None
) -> None:
    out.view(index, change.from_)["view"] = change.to
    out.add("cleanup", index, RenameTable(table=change.from_, to=change.to))


def _drop_column(
    change: DropColumnChange, index: int, plan: Plan, out: _Out, facts: FactReader | None
) -> None:
    table, column = change.table, change.column
    trigger = _trigger_name(table, column)
    if change.down is not None:
        # The old version still reads the column: rows the new version writes without it get
        # `down` (the trigger's reverse mapping); a value someone wrote is kept.
        fill = f"COALESCE({q(column)}, {change.down})"
        out.add("dual_write", index, DualWrite(table=table, name=trigger, reverse={column: fill}))
    out.view(index, table)["hide"].append(column)
    # drop_column drops a trigger that reads the column in its own transaction.
    out.add("cleanup", index, DropColumn(table=table, column=column))


def _add_column(
    change: AddColumnChange, index: int, plan: Plan, out: _Out, facts: FactReader | None
) -> None:
    table, column = change.table, change.column
    name = column.name
    if change.up is None:
        new = NewColumn(
            name=name, type=column.type, nullable=column.nullable, default=column.default
        )
        out.add("additive", index, AddColumn(table=table, column=new))
    else:
        # Old writers leave the column NULL and the trigger fills it, so its default and NOT
        # NULL wait for cleanup, after the trigger is gone.
        out.add(
            "additive", index, AddColumn(table=table, column=NewColumn(name=name, type=column.type))
        )
    if column.comment is not None:
        out.add("additive", index, SetComment(table=table, column=name, comment=column.comment))
    if change.up is not None:
        trigger = _trigger_name(table, name)
        out.add("dual_write", index, DualWrite(table=table, name=trigger, set={name: change.up}))
        out.add("backfill", index, Backfill(table=table, set={name: change.up}))
        # NOT NULL while the trigger still fills the column; the default before the trigger
        # goes, so that no insert meets neither.
        if not column.nullable:
            out.add("cleanup", index, SetNotNull(table=table, column=name))
        if column.default is not None:
            out.add("cleanup", index, SetDefault(table=table, column=name, default=column.default))
        out.add("cleanup", index, DropDualWrite(table=table, name=trigger))
    base = bare_name(table)
    if column.unique:
        unique = truncate_identifier(f"{base}_{name}_key")
        out.add("cleanup", index, AddUnique(table=table, name=unique, columns=[name]))
    if isinstance(column.check, str):
        check = truncate_identifier(f"{base}_{name}_check")
        out.add("cleanup", index, AddCheck(table=table, name=check, check=column.check))
    elif column.check is not None:
        named = column.check
        out.add(
            "cleanup",
            index,
            AddCheck(
                table=table, name=named.name, check=named.constraint, no_inherit=named.no_inherit
            ),
        )
    if column.references is not None:
        out.add("cleanup", index, _foreign_key(table, name, column.references))


def _drop_constraint(
    change: DropConstraintChange, index: int, plan: Plan, out: _Out, facts: FactReader | None
) -> None:
    if change.column is None:
        out.add("cleanup", index, DropConstraint(table=change.table, name=change.name))
        return
    copy = _Copy(
        table=change.table,
        column=change.column,
        final=change.column,
        type=None,
        up=change.up,
        down=change.down,
        skip=frozenset({change.name}),
    )
    _copy_column(copy, index, plan, out, facts)


def _rename_constraint(
    change: RenameConstraintChange, index: int, plan: Plan, out: _Out, facts: FactReader | None
) -> None:
    step = RenameConstraint(table=change.table, name=change.from_, to=change.to)
    out.add("cleanup", index, step)


def _set_comment(
    change: SetCommentChange, index: int, plan: Plan, out: _Out, facts: FactReader | None
) -> None:
    step = SetComment(table=change.table, column=change.column, comment=change.comment)
    out.add("additive", index, step)


def _set_replica_identity(
    change: SetReplicaIdentityChange,
    index: int,
    plan: Plan,
    out: _Out,
    facts: FactReader | None,
) -> None:
    identity = change.identity
    step = SetReplicaIdentity(table=change.table, type=identity.type, index=identity.index)
    out.add("additive", index, step)


def _add_primary_key(
    change: AddPrimaryKeyChange, index: int, plan: Plan, out: _Out, facts: FactReader | None
) -> None:
    table = change.table
    name = change.name or truncate_identifier(f"{bare_name(table)}_pkey")
    # NOT NULL first, through a validated constraint: attaching the key to nullable columns
    # would set them NOT NULL with a scan under ACCESS EXCLUSIVE.
    out.add("cleanup", index, *(SetNotNull(table=table, column=c) for c in change.columns))
    out.add("cleanup", index, AddPrimaryKey(table=table, name=name, columns=change.columns))


_EXPANDERS: dict[type[ChangeSpec], Callable[..., None]] = {
    AlterColumn: _alter_column,
    AddColumnChange: _add_column,
    DropColumnChange: _drop_column,
    RenameColumnChange: _rename_column,
    RenameTableChange: _rename_table,
    DropConstraintChange: _drop_constraint,
    RenameConstraintChange: _rename_constraint,
    SetCommentChange: _set_comment,
    SetReplicaIdentityChange: _set_replica_identity,
    AddPrimaryKeyChange: _add_primary_key,
}


def _foreign_key(table: str, column: str, ref: ReferencesSpec) -> AddForeignKey:
    """The foreign key a change's `references` asks of `column`."""
    return AddForeignKey(
        table=table,
        name=ref.name,
        columns=[column],
        references=ForeignRef(table=ref.table, columns=[ref.column]),
        on_delete=ref.on_delete,
    )
