"""Step kinds: one strict, frozen model per kind of step a plan can contain.

The models hold only what the plan says. What a step does to the database is decided by
``zdm.operations``; checks that need the live schema (a volatile default, a missing column)
happen there too.
"""

from __future__ import annotations

import re
import warnings
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import ConfigDict, Field, PlainValidator, model_validator

from zdm.plan.definitions import (
    ColumnDef,
    ColumnRef,
    IndexColumn,
    IndexMethod,
    MatchType,
    OnDelete,
    OnUpdate,
    PlanModel,
    TableConstraint,
)
from zdm.plan.durations import Duration
from zdm.plan.errors import PlanValueError, describe
from zdm.plan.names import Name, QualifiedName, SqlText, bare_name, truncate_identifier

__all__ = ["ColumnDef", "ColumnRef", "IndexColumn", "IndexMethod", "OnDelete", "PlanModel"]
LockModeName = Literal[
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
]

_NOT_NULL_WITHOUT_DEFAULT = (
    "a NOT NULL column without a default fails on a non-empty table; add it nullable, "
    "backfill, then set_not_null in cleanup"
)


class StepSpec(PlanModel):
    """One step of a plan, as written under its kind's key."""

    kind: ClassVar[str]
    """The YAML key that selects this model."""
    destructive: ClassVar[bool] = False
    """Destructive steps remove or rename what running code may use: cleanup phase only."""


# --- tables -------------------------------------------------------------------------------


class CreateTable(StepSpec):
    """Create a table; a new table locks nothing that anyone uses."""

    kind = "create_table"

    table: QualifiedName
    columns: list[ColumnDef] = Field(min_length=1)
    primary_key: list[Name] | None = Field(default=None, min_length=1)
    constraints: list[TableConstraint] = Field(default_factory=list)
    """Named table-level constraints: primary_key, unique, check, foreign_key, exclude."""
    comment: str | None = None
    """The table's comment."""

    @model_validator(mode="after")
    def _check_keys(self) -> Self:
        seen: set[str] = set()
        for column in self.columns:
            if column.name in seen:
                raise PlanValueError(f"column {column.name!r} is defined twice", "columns")
            seen.add(column.name)
        for constraint in self.constraints:
            for name in [*(constraint.columns or []), *_included(constraint)]:
                if name not in seen:
                    raise PlanValueError(
                        f"constraint {constraint.name!r} names column {name!r}, which is not "
                        "among the table's columns",
                        "constraints",
                    )
        keyed = [f"column {c.name!r}" for c in self.columns if c.primary_key]
        keyed += [f"constraint {c.name!r}" for c in self.constraints if c.type == "primary_key"]
        if keyed and self.primary_key is not None:
            raise PlanValueError(
                f"the primary key is given both here and on {keyed[0]}; keep one of them",
                "primary_key",
            )
        if len(keyed) > 1:
            raise PlanValueError(
                f"{', '.join(keyed)} are all primary keys; a table has one (list a composite "
                "key's columns in the table's primary_key)",
                "columns",
            )
        for name in self.primary_key or []:
            if name not in seen:
                raise PlanValueError(
                    f"primary key column {name!r} is not among the table's columns",
                    "primary_key",
                )
        return self


def _included(constraint: TableConstraint) -> list[str]:
    params = constraint.index_parameters
    return list(params.include_columns or []) if params is not None else []


class DropTable(StepSpec):
    """Drop a table."""

    kind = "drop_table"
    destructive = True

    table: QualifiedName


class RenameTable(StepSpec):
    """Rename a table (catalog only)."""

    kind = "rename_table"
    destructive = True

    table: QualifiedName
    to: Name


# --- columns ------------------------------------------------------------------------------


class NewColumn(PlanModel):
    """The column that ``add_column`` adds."""

    name: Name
    type: SqlText
    nullable: bool = True
    default: SqlText | None = None

    @model_validator(mode="after")
    def _check_not_null(self) -> Self:
        if not self.nullable and self.default is None:
            raise PlanValueError(_NOT_NULL_WITHOUT_DEFAULT, "nullable")
        return self


class AddColumn(StepSpec):
    """Add a column; NOT NULL needs a constant default, else the ALTER fails on existing rows."""

    kind = "add_column"

    table: QualifiedName
    column: NewColumn


class DropColumn(StepSpec):
    """Drop a column."""

    kind = "drop_column"
    destructive = True

    table: QualifiedName
    column: Name


class RenameColumn(StepSpec):
    """Rename a column (catalog only)."""

    kind = "rename_column"
    destructive = True

    table: QualifiedName
    column: Name
    to: Name


class SetDefault(StepSpec):
    """Set a column's default (catalog only)."""

    kind = "set_default"

    table: QualifiedName
    column: Name
    default: SqlText


class DropDefault(StepSpec):
    """Drop a column's default (catalog only)."""

    kind = "drop_default"
    destructive = True

    table: QualifiedName
    column: Name


_VARCHAR_OR_TEXT = re.compile(
    r"^\s*(?:text|(?:character\s+varying|varchar)\s*(?:\(\s*(?P<length>\d+)\s*\))?)\s*$", re.I
)


def varchar_length(type_: str) -> int | Literal["text"] | None:
    """For ``varchar(n)``: n; ``varchar``: None; ``text``: "text"; raises ValueError else."""
    match = _VARCHAR_OR_TEXT.match(type_)
    if match is None:
        raise ValueError(type_)
    if match.group("length") is not None:
        return int(match.group("length"))
    return "text" if "text" in type_.lower() else None


class SetType(StepSpec):
    """Change a column's type where PostgreSQL needs no rewrite: varchar to a longer varchar,
    to varchar without a length or to text (catalog only); any other change goes through a
    copy column (``alter_column``)."""

    kind = "set_type"

    table: QualifiedName
    column: Name
    type: SqlText
    """``varchar(n)``, ``varchar`` or ``text``."""

    @model_validator(mode="after")
    def _check_type(self) -> Self:
        try:
            varchar_length(self.type)
        except ValueError:
            raise PlanValueError(
                f"set_type changes only what PostgreSQL changes without a rewrite (a varchar "
                f"widened, or made text), not to {self.type}; use alter_column, which goes "
                "through a copy column",
                "type",
            ) from None
        return self


class SetNotNull(StepSpec):
    """Make a column NOT NULL through a validated check, so no long scan holds a lock."""

    kind = "set_not_null"
    destructive = True

    table: QualifiedName
    column: Name


class DropNotNull(StepSpec):
    """Make a column nullable again (catalog only)."""

    kind = "drop_not_null"
    destructive = True

    table: QualifiedName
    column: Name


class SetComment(StepSpec):
    """Set (or, with ``comment: null``, remove) the comment of a column, or of the table when
    no column is named; catalog only."""

    kind = "set_comment"

    table: QualifiedName
    column: Name | None = None
    comment: str | None


# --- indexes and constraints --------------------------------------------------------------


class CreateIndex(StepSpec):
    """Build an index concurrently, so writes continue while it is built."""

    kind = "create_index"

    table: QualifiedName
    name: Name
    columns: list[Name | IndexColumn] | None = Field(default=None, min_length=1)
    """Key columns: names, or ``{column, collate, opclass, sort, nulls}``."""
    expression: SqlText | None = None
    unique: bool = False
    where: SqlText | None = None
    include: list[Name] | None = Field(default=None, min_length=1)
    method: IndexMethod = "btree"
    storage_parameters: SqlText | None = None
    """``WITH (...)`` contents, e.g. ``fillfactor = 70``."""

    @property
    def keys(self) -> list[IndexColumn]:
        """The key columns, each with its options."""
        return [IndexColumn(column=c) if isinstance(c, str) else c for c in self.columns or []]

    @property
    def column_names(self) -> list[str]:
        return [key.column for key in self.keys]

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        if self.columns is None and self.expression is None:
            raise PlanValueError("give either 'columns' or 'expression'")
        if self.columns is not None and self.expression is not None:
            raise PlanValueError("give either 'columns' or 'expression', not both", "expression")
        if self.unique and self.method != "btree":
            raise PlanValueError(
                f"PostgreSQL builds unique indexes only with btree, not {self.method}", "unique"
            )
        return self


class DropIndex(StepSpec):
    """Drop an index concurrently."""

    kind = "drop_index"
    destructive = True

    name: QualifiedName


class ForeignRef(PlanModel):
    """The referenced side of a foreign key."""

    table: QualifiedName
    columns: list[Name] = Field(min_length=1)


# ``validate`` is the plan's key, and BaseModel has a deprecated ``validate`` classmethod that
# the field replaces on instances; pydantic warns about that shadowing, which is intended here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "validate"', category=UserWarning)

    class AddCheck(StepSpec):
        """Add a CHECK constraint NOT VALID, then validate it without blocking writes."""

        kind = "add_check"

        table: QualifiedName
        name: Name
        check: SqlText
        no_inherit: bool = False
        validate: bool = True  # type: ignore[assignment]

    class AddForeignKey(StepSpec):
        """Add a foreign key NOT VALID, then validate it without blocking writes."""

        kind = "add_foreign_key"

        table: QualifiedName
        name: Name
        columns: list[Name] = Field(min_length=1)
        references: ForeignRef
        on_delete: OnDelete | None = None
        on_update: OnUpdate | None = None
        match_type: MatchType | None = None
        deferrable: bool = False
        initially_deferred: bool = False
        validate: bool = True  # type: ignore[assignment]

        @model_validator(mode="after")
        def _check_arity(self) -> Self:
            if self.initially_deferred and not self.deferrable:
                raise PlanValueError(
                    "initially_deferred needs deferrable: true", "initially_deferred"
                )
            if len(self.columns) != len(self.references.columns):
                raise PlanValueError(
                    f"{len(self.columns)} column(s) reference {len(self.references.columns)} "
                    "column(s); give the same number on both sides",
                    "references",
                )
            return self


class AddUnique(StepSpec):
    """Build a unique index concurrently, then attach it as a constraint."""

    kind = "add_unique"

    table: QualifiedName
    name: Name
    columns: list[Name] = Field(min_length=1)


class ValidateConstraint(StepSpec):
    """Validate a NOT VALID constraint; reads and writes continue meanwhile."""

    kind = "validate_constraint"

    table: QualifiedName
    name: Name


class DropConstraint(StepSpec):
    """Drop a constraint."""

    kind = "drop_constraint"
    destructive = True

    table: QualifiedName
    name: Name


class RenameConstraint(StepSpec):
    """Rename a constraint (and the index of a unique or primary key one); catalog only."""

    kind = "rename_constraint"
    destructive = True

    table: QualifiedName
    name: Name
    to: Name


class AddPrimaryKey(StepSpec):
    """A unique index built concurrently, then attached as the table's primary key; the columns
    must already be NOT NULL (else the attach would scan under an exclusive lock)."""

    kind = "add_primary_key"

    table: QualifiedName
    name: Name
    columns: list[Name] = Field(min_length=1)


ReplicaIdentityType = Literal["default", "full", "nothing", "index"]


class SetReplicaIdentity(StepSpec):
    """What logical replication writes of an updated or deleted row's old version; catalog
    only."""

    kind = "set_replica_identity"

    table: QualifiedName
    type: ReplicaIdentityType
    index: Name | None = None
    """The unique index, for type ``index``."""

    @model_validator(mode="after")
    def _check_index(self) -> Self:
        if (self.type == "index") != (self.index is not None):
            raise PlanValueError("give 'index' exactly when type is index", "index")
        return self


# --- data ---------------------------------------------------------------------------------


def _default_trigger_name(table: str) -> str:
    return truncate_identifier(f"zdm_dw_{bare_name(table)}")


class DualWrite(StepSpec):
    """A trigger that keeps new columns in step with old ones for every write."""

    kind = "dual_write"

    table: QualifiedName
    set: dict[Name, SqlText] = Field(default_factory=dict)
    """New column -> expression over the old columns, for the old version's writes."""
    reverse: dict[Name, SqlText] = Field(default_factory=dict)
    """Old column -> expression over the new shape, for the new version's writes (a column
    the new version drops gets its `down` this way)."""
    name: Name | None = None
    on_error: Literal["record", "fail"] = "record"
    """What a mapping that raises for a row does: ``record`` (the application's write succeeds,
    the column keeps what the write gave it, the error goes to ``mapping_errors``) or ``fail``
    (the application's statement fails with the error)."""

    @model_validator(mode="after")
    def _check_mappings(self) -> Self:
        if not self.set and not self.reverse:
            raise PlanValueError("a dual_write needs `set`, `reverse` or both", "set")
        return self

    @property
    def trigger_name(self) -> str:
        """The trigger (and function) name: ``name``, else ``zdm_dw_<table>``."""
        return self.name or _default_trigger_name(self.table)


class DropDualWrite(StepSpec):
    """Drop a dual-write trigger and its function together."""

    kind = "drop_dual_write"
    destructive = True

    table: QualifiedName
    name: Name | None = None

    @property
    def trigger_name(self) -> str:
        """The trigger (and function) name: ``name``, else ``zdm_dw_<table>``."""
        return self.name or _default_trigger_name(self.table)


class BackfillFrom(PlanModel):
    """Another table joined into the backfill's UPDATE."""

    table: QualifiedName
    on: SqlText


def _validate_batch_size(value: Any) -> int | Literal["auto"]:
    if value == "auto" and isinstance(value, str):
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 1:
            return value
        raise ValueError(f"expected a batch size >= 1 or auto, got {value}")
    raise ValueError(f"expected a positive integer or auto, got {describe(value)}")


BatchSize = Annotated[
    int | Literal["auto"],
    PlainValidator(
        _validate_batch_size,
        json_schema_input_type=Annotated[int, Field(ge=1)] | Literal["auto"],
    ),
]


class Backfill(StepSpec):
    """Bring existing rows to the new shape in small, checkpointed batches."""

    kind = "backfill"
    model_config = ConfigDict(validate_by_name=True)

    table: QualifiedName
    set: dict[Name, SqlText] | None = Field(default=None, min_length=1)
    """Column -> SQL expression; defaults to the table's dual_write mapping."""
    where: SqlText | None = None
    """Rows to update; defaults to rows where a mapped column differs from its expression."""
    from_: BackfillFrom | None = Field(default=None, alias="from")
    """Another table joined into the UPDATE (``UPDATE ... FROM table WHERE on``)."""
    batch_size: BatchSize = "auto"
    """Rows per batch, or auto: sized so that a batch takes about batch_time."""
    batch_time: Duration = 50
    """Target duration of one batch when batch_size is auto: how long an application write may
    wait on one of its row locks."""
    min_batch: int = Field(default=100, ge=1)
    """Smallest batch that auto sizing shrinks to."""
    max_batch: int = Field(default=100_000, ge=1)
    """Largest batch that auto sizing grows to."""
    workers: int = Field(default=1, ge=1, le=32)
    """Parallel workers, each walking its own key range."""
    pause: Duration = 0
    """Sleep between batches, to leave room for application traffic."""
    max_replica_lag: Duration | None = None
    """Wait while any replica lags more than this."""
    throttle_query: SqlText | None = None
    """A query run before each batch; the backfill waits while it returns true."""
    pause_on_autovacuum: bool = False
    """Wait while autovacuum works on the table."""

    @model_validator(mode="after")
    def _check_batches(self) -> Self:
        if self.batch_time <= 0:
            raise PlanValueError("batch_time must be longer than 0", "batch_time")
        if self.min_batch > self.max_batch:
            field = "max_batch" if "max_batch" in self.model_fields_set else "min_batch"
            raise PlanValueError(
                f"min_batch ({self.min_batch}) is larger than max_batch ({self.max_batch})", field
            )
        return self


ExpectValue = int | float | str | bool | None


def _validate_expect(value: Any) -> ExpectValue:
    # A plain validator, not a union: YAML true must stay True and 0 must stay the int 0.
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"expected a number, string, boolean or null, got {describe(value)}")


class Verify(StepSpec):
    """A read-only query that must return ``expect``; proves data is complete before going on."""

    kind = "verify"

    sql: SqlText
    expect: Annotated[
        ExpectValue,
        PlainValidator(_validate_expect, json_schema_input_type=bool | int | float | str | None),
    ]
    name: str | None = None


class Sql(StepSpec):
    """Raw SQL for what no kind covers; ``lock`` declares the strongest lock it takes."""

    kind = "sql"

    up: SqlText | None = None
    down: SqlText | None = None
    up_file: str | None = Field(default=None, min_length=1)
    down_file: str | None = Field(default=None, min_length=1)
    transactional: bool = True
    lock: LockModeName | None = None
    tables: list[QualifiedName] = Field(default_factory=list)
    """The tables the SQL locks: before a lock that blocks the application, zdm waits, without
    queueing, for long transactions holding these, and names who blocked it."""

    @model_validator(mode="after")
    def _check_sources(self) -> Self:
        if self.up is None and self.up_file is None:
            raise PlanValueError("give the SQL to run in 'up' or in a file named by 'up_file'")
        if self.up is not None and self.up_file is not None:
            raise PlanValueError("give either 'up' or 'up_file', not both", "up_file")
        if self.down is not None and self.down_file is not None:
            raise PlanValueError("give either 'down' or 'down_file', not both", "down_file")
        return self


# --- versioned views ----------------------------------------------------------------------


class ExposeTable(PlanModel):
    """One table's new shape, shown as a simple (auto-updatable) view of it."""

    table: QualifiedName
    view: Name | None = None
    """The view's name; defaults to the table's name."""
    columns: list[Name] | None = Field(default=None, min_length=1)
    """The table's columns the view shows, in order; defaults to all of them minus ``hide``."""
    hide: list[Name] = Field(default_factory=list)
    """Columns the view leaves out (the old shape), when ``columns`` is not given."""
    rename: dict[Name, Name] = Field(default_factory=dict)
    """Table column -> the name the view shows it under."""

    @model_validator(mode="after")
    def _check_columns(self) -> Self:
        if self.columns is not None and self.hide:
            raise PlanValueError(
                "give either 'columns' (what the view shows) or 'hide' (what it leaves out), "
                "not both",
                "hide",
            )
        for field, names in (("columns", self.columns or []), ("hide", self.hide)):
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise PlanValueError(f"column {twice[0]!r} is listed twice", field)
        for old in self.rename:
            if self.columns is not None and old not in self.columns:
                raise PlanValueError(
                    f"renamed column {old!r} is not among the view's columns", "rename"
                )
            if old in self.hide:
                raise PlanValueError(f"column {old!r} is both hidden and renamed", "rename")
        shown = [self.rename.get(name, name) for name in self.columns or []]
        targets = list(self.rename.values())
        for names in (shown, targets):
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise PlanValueError(
                    f"the view would show two columns named {twice[0]!r}", "rename"
                )
        return self

    @property
    def view_name(self) -> str:
        """The view's name: ``view``, else the table's own name."""
        return self.view or bare_name(self.table)


class Expose(StepSpec):
    """A schema of simple views showing each changed table in its new shape.

    A new application version sets ``search_path`` to this schema (then the base schema) and
    reads and writes through the views, while the old version keeps using the base tables.
    """

    kind = "expose"
    model_config = ConfigDict(validate_by_name=True)

    schema_: Name = Field(alias="schema")
    """The version schema, e.g. ``app_v2``; zdm creates it and owns it."""
    tables: list[ExposeTable] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_views(self) -> Self:
        names = [table.view_name for table in self.tables]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise PlanValueError(
                f"two views would be named {twice[0]!r}; give one of them another 'view' name",
                "tables",
            )
        return self


class Unexpose(StepSpec):
    """Drop a version schema made by ``expose``, with its views."""

    kind = "unexpose"
    destructive = True
    model_config = ConfigDict(validate_by_name=True)

    schema_: Name = Field(alias="schema")


STEP_KINDS: dict[str, type[StepSpec]] = {
    cls.kind: cls
    for cls in (
        CreateTable,
        DropTable,
        RenameTable,
        AddColumn,
        DropColumn,
        RenameColumn,
        SetDefault,
        DropDefault,
        SetType,
        CreateIndex,
        DropIndex,
        AddCheck,
        AddForeignKey,
        AddUnique,
        ValidateConstraint,
        DropConstraint,
        RenameConstraint,
        AddPrimaryKey,
        SetReplicaIdentity,
        SetNotNull,
        DropNotNull,
        SetComment,
        DualWrite,
        DropDualWrite,
        Backfill,
        Verify,
        Sql,
        Expose,
        Unexpose,
    )
}
"""Every step kind by its YAML key, in the order of DESIGN.md's table."""
