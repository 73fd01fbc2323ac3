"""The parts of a new table's and a new index's definition: columns, their keys and identity,
table-level constraints, index keys with their operator class, collation and order.

Option names follow pgroll's operations (``match_type``, ``index_parameters``, ``exclude``), so
its migrations port over field by field.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from zdm.plan.errors import PlanValueError
from zdm.plan.names import Name, QualifiedName, SqlText

OnDelete = Literal["no action", "restrict", "cascade", "set null", "set default"]
OnUpdate = OnDelete
MatchType = Literal["simple", "full"]
IndexMethod = Literal["btree", "hash", "gin", "gist", "brin", "spgist"]


class PlanModel(BaseModel):
    """Base of every plan model: unknown keys are errors, values are never coerced."""

    # strict: a YAML 1 is not a string, "yes" is not a boolean; plans say what they mean.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Deferrable(PlanModel):
    """``deferrable`` / ``initially_deferred`` of a key or foreign key."""

    deferrable: bool = False
    initially_deferred: bool = False

    @model_validator(mode="after")
    def _check_deferred(self) -> Self:
        if self.initially_deferred and not self.deferrable:
            raise PlanValueError("initially_deferred needs deferrable: true", "initially_deferred")
        return self


class ColumnRef(Deferrable):
    """A column-level foreign key: the referenced table and column."""

    name: Name | None = None
    """The constraint's name; PostgreSQL's ``<table>_<column>_fkey`` when not given."""
    table: QualifiedName
    column: Name = "id"
    on_delete: OnDelete | None = None
    on_update: OnUpdate | None = None
    match_type: MatchType | None = None


class NamedCheck(PlanModel):
    """A CHECK constraint with its own name."""

    name: Name
    constraint: SqlText
    no_inherit: bool = False


class Identity(PlanModel):
    """``GENERATED {ALWAYS | BY DEFAULT} AS IDENTITY [(sequence options)]``."""

    user_specified_values: Literal["always", "by default"] = "always"
    sequence_options: SqlText | None = None
    """Sequence options as SQL, e.g. ``START WITH 100 INCREMENT BY 10``."""


class Generated(PlanModel):
    """A generated column: a stored ``expression``, or an ``identity``."""

    expression: SqlText | None = None
    identity: Identity | None = None

    @model_validator(mode="after")
    def _check_one(self) -> Self:
        if (self.expression is None) == (self.identity is None):
            raise PlanValueError("give either 'expression' or 'identity'")
        return self


class ColumnDef(PlanModel):
    """A column of a new table."""

    name: Name
    type: SqlText
    nullable: bool = True
    default: SqlText | None = None
    primary_key: bool = False
    unique: bool = False
    references: ColumnRef | None = None
    check: SqlText | NamedCheck | None = None
    """An expression (PostgreSQL names the constraint), or ``{name, constraint, no_inherit}``."""
    comment: str | None = None
    generated: Generated | None = None

    @model_validator(mode="after")
    def _check_generated(self) -> Self:
        if self.generated is not None and self.default is not None:
            raise PlanValueError("a generated column takes no default", "default")
        return self


class TableRef(PlanModel):
    """The referenced side of a table-level foreign key."""

    table: QualifiedName
    columns: list[Name] = Field(min_length=1)
    on_delete: OnDelete | None = None
    on_delete_set_columns: list[Name] | None = Field(default=None, min_length=1)
    """For ``set null`` / ``set default``: only these referencing columns (PostgreSQL 15+)."""
    on_update: OnUpdate | None = None
    match_type: MatchType | None = None


class IndexParameters(PlanModel):
    """How a unique, primary key or exclusion constraint's index is built."""

    tablespace: Name | None = None
    storage_parameters: SqlText | None = None
    """``WITH (...)`` contents, e.g. ``fillfactor = 70``."""
    include_columns: list[Name] | None = Field(default=None, min_length=1)


class Exclusion(PlanModel):
    """``EXCLUDE USING index_method (elements) [WHERE (predicate)]``."""

    index_method: IndexMethod = "gist"
    elements: SqlText
    """The element list as SQL, e.g. ``room WITH =, during WITH &&``."""
    predicate: SqlText | None = None


ConstraintType = Literal["primary_key", "unique", "check", "foreign_key", "exclude"]

_FIELDS_OF: dict[str, set[str]] = {
    "primary_key": {"columns", "deferrable", "initially_deferred", "index_parameters"},
    "unique": {
        "columns",
        "nulls_not_distinct",
        "deferrable",
        "initially_deferred",
        "index_parameters",
    },
    "check": {"check", "no_inherit"},
    "foreign_key": {"columns", "references", "deferrable", "initially_deferred"},
    "exclude": {"exclude", "deferrable", "initially_deferred", "index_parameters"},
}
_REQUIRED: dict[str, set[str]] = {
    "primary_key": {"columns"},
    "unique": {"columns"},
    "check": {"check"},
    "foreign_key": {"columns", "references"},
    "exclude": {"exclude"},
}


class TableConstraint(Deferrable):
    """A named table-level constraint of ``create_table``."""

    name: Name
    type: ConstraintType
    columns: list[Name] | None = Field(default=None, min_length=1)
    check: SqlText | None = None
    nulls_not_distinct: bool = False
    no_inherit: bool = False
    references: TableRef | None = None
    index_parameters: IndexParameters | None = None
    exclude: Exclusion | None = None

    @model_validator(mode="after")
    def _check_fields(self) -> Self:
        given = set(self.model_fields_set) - {"name", "type"}
        for field in sorted(_REQUIRED[self.type] - given):
            raise PlanValueError(f"a {self.type} constraint needs '{field}'", field)
        for field in sorted(given - _FIELDS_OF[self.type]):
            raise PlanValueError(f"a {self.type} constraint takes no '{field}'", field)
        ref = self.references
        if ref is not None and self.columns and len(ref.columns) != len(self.columns):
            raise PlanValueError(
                f"{len(self.columns)} column(s) reference {len(ref.columns)} column(s); give "
                "the same number on both sides",
                "references",
            )
        return self


class OpClass(PlanModel):
    """An index key's operator class, with its parameters (``siglen=32``)."""

    name: Name
    params: list[SqlText] | None = Field(default=None, min_length=1)


class IndexColumn(PlanModel):
    """An index key with its options; a plain name is the same as ``{column: name}``."""

    column: Name
    collate: Name | None = None
    opclass: OpClass | None = None
    sort: Literal["asc", "desc"] | None = None
    nulls: Literal["first", "last"] | None = None
