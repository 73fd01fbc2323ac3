"""High-level changes: one declaration each, expanded by `zdm.plan.expand` into the five phases.

Field names follow pgroll's operations where the meaning is the same, so its migrations port
over: ``alter_column: {table, column, type, up, down, nullable, default, unique: {name},
check: {name, constraint}, references: {name, table, column, on_delete}, comment, name}``.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from zdm.plan.definitions import NamedCheck
from zdm.plan.errors import PlanValueError
from zdm.plan.names import Name, QualifiedName, SqlText
from zdm.plan.steps import OnDelete, PlanModel


class ChangeSpec(PlanModel):
    """One high-level change, as written under its kind's key in ``changes``."""

    kind: ClassVar[str]
    """The YAML key that selects this model."""


class UniqueSpec(PlanModel):
    """A unique constraint on the changed column."""

    name: Name


class CheckSpec(PlanModel):
    """A named CHECK constraint; ``constraint`` names the column by its (new) name."""

    name: Name
    constraint: SqlText


class ReferencesSpec(PlanModel):
    """A named foreign key from the changed column."""

    name: Name
    table: QualifiedName
    column: Name = "id"
    on_delete: OnDelete | None = None


class AlterColumn(ChangeSpec):
    """Change a column's type, nullability, default, constraints, comment or name.

    Done in place where PostgreSQL allows it without a rewrite or a long lock; a type change
    that rewrites, an ``up`` that computes new values, or a new constraint with ``up`` to bring
    old values into line goes through a copy column kept in step both ways and swapped in at
    cleanup.
    """

    kind = "alter_column"

    table: QualifiedName
    column: Name
    name: Name | None = None
    """The column's new name (a rename)."""
    type: SqlText | None = None
    """The column's new type; the change goes through a copy column."""
    up: SqlText | None = None
    """Old -> new: the copy's value, an expression naming the old column (defaults to a cast)."""
    down: SqlText | None = None
    """New -> old: the old column's value for rows the new version writes; names the column by
    its own (old) name, meaning the new value."""
    nullable: bool | None = None
    default: SqlText | None = None
    """The new default; ``null`` drops the default."""
    unique: UniqueSpec | None = None
    check: CheckSpec | None = None
    references: ReferencesSpec | None = None
    comment: str | None = None
    """The column's comment; ``null`` removes it."""

    @model_validator(mode="after")
    def _check_something(self) -> Self:
        changes = set(self.model_fields_set) - {"table", "column", "up", "down"}
        if not changes:
            raise PlanValueError(
                "alter_column changes nothing; give at least one of name, type, nullable, "
                "default, unique, check, references, comment"
            )
        if self.name == self.column:
            raise PlanValueError(f"the new name is the column's own name {self.column!r}", "name")
        if "nullable" in self.model_fields_set and self.nullable is None:
            raise PlanValueError("expected true or false", "nullable")
        if self.down is not None and not self.copies:
            raise PlanValueError(
                "'down' is used only when the change goes through a copy column (a type "
                "change, or a constraint with 'up')",
                "down",
            )
        return self

    @property
    def copies(self) -> bool:
        """Whether the change may go through a copy column rather than in place (a type change
        that PostgreSQL makes without a rewrite, such as varchar widening, is done in place)."""
        constrains = self.unique is not None or self.check is not None
        constrains = constrains or self.references is not None or self.nullable is False
        return self.type is not None or (self.up is not None and constrains) or self.transforms

    @property
    def transforms(self) -> bool:
        """`up` computes new values (not just the column, or its cast to the new type): only a
        copy column applies it, so the change cannot be made in place."""
        if self.up is None:
            return False
        return _bare(self.up) not in _bare_forms(self.column, self.type)

    @property
    def sets_default(self) -> bool:
        return "default" in self.model_fields_set

    @property
    def sets_comment(self) -> bool:
        return "comment" in self.model_fields_set


def _bare(text: str) -> str:
    """SQL text without white space, outer parentheses and case (for comparing short forms)."""
    text = "".join(text.split())
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return text.lower()


def _bare_forms(column: str, type_: str | None) -> set[str]:
    """`up` texts that leave every value as it is: the column, or its cast to the new type."""
    names = {column, '"' + column.replace('"', '""') + '"'}
    forms = {_bare(n) for n in names}
    if type_ is not None:
        forms |= {_bare(f"CAST({n} AS {type_})") for n in names}
        forms |= {_bare(f"{n}::{type_}") for n in names}
    return forms


class RenameColumnChange(ChangeSpec):
    """Rename a column: the new name is shown through version views until cleanup renames it."""

    kind = "rename_column"
    model_config = ConfigDict(validate_by_name=True)

    table: QualifiedName
    from_: Name = Field(alias="from")
    to: Name


class RenameTableChange(ChangeSpec):
    """Rename a table: the new name is shown as a version view until cleanup renames it."""

    kind = "rename_table"
    model_config = ConfigDict(validate_by_name=True)

    from_: QualifiedName = Field(alias="from")
    to: Name


class DropColumnChange(ChangeSpec):
    """Drop a column: hidden from the version views, dropped in cleanup; ``down`` fills it for
    rows the new version writes meanwhile (the old version still reads it)."""

    kind = "drop_column"

    table: QualifiedName
    column: Name
    down: SqlText | None = None


class AddColumnSpec(PlanModel):
    """The column ``add_column`` adds."""

    name: Name
    type: SqlText
    nullable: bool = True
    default: SqlText | None = None
    comment: str | None = None
    unique: bool = False
    check: SqlText | NamedCheck | None = None
    """An expression (named ``<table>_<column>_check``), or ``{name, constraint}``."""
    references: ReferencesSpec | None = None


class AddColumnChange(ChangeSpec):
    """Add a column; with ``up`` existing rows and old writers' rows get its value from the
    old columns (dual-write and backfill); NOT NULL is enforced in cleanup."""

    kind = "add_column"

    table: QualifiedName
    column: AddColumnSpec
    up: SqlText | None = None

    @model_validator(mode="after")
    def _check_not_null(self) -> Self:
        column = self.column
        if not column.nullable and column.default is None and self.up is None:
            raise PlanValueError(
                "a NOT NULL column needs 'up' (to fill existing rows) or a constant default",
                "column",
            )
        return self


class DropConstraintChange(ChangeSpec):
    """Drop a constraint. Without ``up``/``down`` it is dropped in cleanup; with them, the new
    version writes through a copy of ``column`` that lacks it (``up`` old -> new, ``down``
    new -> old, a value the constraint accepts) until cleanup swaps the copy in."""

    kind = "drop_constraint"

    table: QualifiedName
    name: Name
    column: Name | None = None
    up: SqlText | None = None
    down: SqlText | None = None

    @model_validator(mode="after")
    def _check_copy(self) -> Self:
        if (self.up is not None or self.down is not None) and self.column is None:
            raise PlanValueError(
                "'up' and 'down' go through a copy of the constrained column: name it in 'column'",
                "column",
            )
        return self


class RenameConstraintChange(ChangeSpec):
    """Rename a constraint in cleanup."""

    kind = "rename_constraint"
    model_config = ConfigDict(validate_by_name=True)

    table: QualifiedName
    from_: Name = Field(alias="from")
    to: Name


class SetCommentChange(ChangeSpec):
    """Set or remove (``null``) the comment of a column, or of the table with no column."""

    kind = "set_comment"

    table: QualifiedName
    column: Name | None = None
    comment: str | None


class ReplicaIdentity(PlanModel):
    """``type``: default, full, nothing or index (then ``index`` names a unique index)."""

    type: Literal["default", "full", "nothing", "index"]
    index: Name | None = None


class SetReplicaIdentityChange(ChangeSpec):
    """Set the table's replica identity (logical replication)."""

    kind = "set_replica_identity"

    table: QualifiedName
    identity: ReplicaIdentity

    @model_validator(mode="after")
    def _check_index(self) -> Self:
        if (self.identity.type == "index") != (self.identity.index is not None):
            raise PlanValueError("give 'index' exactly when type is index", "identity")
        return self


class AddPrimaryKeyChange(ChangeSpec):
    """Give a table a primary key: its columns made NOT NULL without a long lock, a unique index
    built concurrently, then attached; all in cleanup."""

    kind = "add_primary_key"

    table: QualifiedName
    columns: list[Name] = Field(min_length=1)
    name: Name | None = None
    """Defaults to ``<table>_pkey``."""


CHANGE_KINDS: dict[str, type[ChangeSpec]] = {
    cls.kind: cls
    for cls in (
        AlterColumn,
        AddColumnChange,
        DropColumnChange,
        RenameColumnChange,
        RenameTableChange,
        DropConstraintChange,
        RenameConstraintChange,
        SetCommentChange,
        SetReplicaIdentityChange,
        AddPrimaryKeyChange,
    )
}
"""Every change kind by its YAML key."""
