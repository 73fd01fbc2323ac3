"""The plan document: settings, gates and five phases of steps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, Union, cast

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    WrapSerializer,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from zdm.plan.changes import CHANGE_KINDS, ChangeSpec
from zdm.plan.durations import Duration, format_duration
from zdm.plan.errors import PlanValueError
from zdm.plan.names import Name
from zdm.plan.steps import STEP_KINDS, PlanModel, StepSpec

PHASES: tuple[str, ...] = ("additive", "dual_write", "backfill", "dual_read", "cleanup")
Phase = Literal["additive", "dual_write", "backfill", "dual_read", "cleanup"]

#: Error type of a list item that is not a one-key mapping naming a known kind.
STEP_KIND_ERROR = "step_kind"
#: The same for an item of ``changes``.
CHANGE_KIND_ERROR = "change_kind"


def step_kind_of(value: Any) -> str | None:
    """The kind a raw step selects: its single key if that names a kind, else None (an error)."""
    if isinstance(value, StepSpec):
        return value.kind
    if isinstance(value, dict) and len(value) == 1:
        (key,) = value
        if isinstance(key, str) and key in STEP_KINDS:
            return key
    return None


def change_kind_of(value: Any) -> str | None:
    """The kind a raw change selects: its single key if that names a change kind, else None."""
    if isinstance(value, ChangeSpec):
        return value.kind
    if isinstance(value, dict) and len(value) == 1:
        (key,) = value
        if isinstance(key, str) and key in CHANGE_KINDS:
            return key
    return None


def _step_choice(cls: type[StepSpec] | type[ChangeSpec]) -> Any:
    """``{kind: {fields}}`` validated as ``cls``; the tag puts the kind into error paths."""
    kind = cls.kind

    def unwrap(value: Any) -> Any:
        return value[kind] if isinstance(value, dict) else value

    # Only for the JSON Schema: editors see the one-key mapping that YAML files contain. Built
    # when the schema is asked for (defer_build), not by every command that loads a plan.
    wrapper = create_model(
        f"{cls.__name__}Step",
        __config__=ConfigDict(extra="forbid", defer_build=True),
        __doc__=cls.__doc__,
        **{kind: (cls, ...)},  # type: ignore[call-overload]
    )
    return Annotated[cls, BeforeValidator(unwrap, json_schema_input_type=wrapper), Tag(kind)]


def _dump_step(
    spec: StepSpec | ChangeSpec, handler: SerializerFunctionWrapHandler
) -> dict[str, Any]:
    """Dump a step as the plan writes it, so that dumped plans validate again."""
    return {spec.kind: handler(spec)}


if TYPE_CHECKING:
    Step = StepSpec
    Change = ChangeSpec
else:
    Step = Annotated[
        Union[tuple(_step_choice(cls) for cls in STEP_KINDS.values())],  # noqa: UP007
        Discriminator(
            step_kind_of,
            custom_error_type=STEP_KIND_ERROR,
            custom_error_message="expected a one-key mapping naming a step kind",
        ),
        WrapSerializer(_dump_step),
    ]
    """A step as YAML writes it (``{add_column: {...}}``), validated to its ``StepSpec``."""
    Change = Annotated[
        Union[tuple(_step_choice(cls) for cls in CHANGE_KINDS.values())],  # noqa: UP007
        Discriminator(
            change_kind_of,
            custom_error_type=CHANGE_KIND_ERROR,
            custom_error_message="expected a one-key mapping naming a change kind",
        ),
        WrapSerializer(_dump_step),
    ]
    """A change as YAML writes it (``{alter_column: {...}}``), validated to its ``ChangeSpec``."""


class Settings(PlanModel):
    """How hard zdm tries to take locks; every key has a default."""

    lock_timeout: Duration = 50
    """First attempt of a statement whose lock would block application traffic: the longest
    the application may queue behind it (later attempts first wait, without queueing, for the
    transactions that held the lock through the last one)."""
    lock_timeout_max: Duration = 2000
    """Later attempts wait a little longer each time, up to this."""
    statement_timeout: Duration = 0
    """Timeout of DDL statements; 0 means none (validating scans never time out)."""
    lock_retries: int = Field(default=50, ge=1)
    """Attempts per step before the run fails (it can be resumed)."""
    retry_max_wait: Duration = 30_000
    """Cap of the exponential backoff between attempts (with jitter)."""
    reconnect_timeout: Duration = 600_000
    """How long a run keeps reconnecting after the server ends its connections (a restart, a
    failover, a network drop) before it stops, failed and resumable; 0: stop at the first drop."""

    @model_validator(mode="after")
    def _check_lock_timeouts(self) -> Self:
        if self.lock_timeout <= 0:
            raise PlanValueError(
                "lock_timeout must be longer than 0: without it a blocked ALTER queues all "
                "traffic behind it",
                "lock_timeout",
            )
        if self.lock_timeout_max < self.lock_timeout:
            explicit = "lock_timeout_max" in self.model_fields_set
            field = "lock_timeout_max" if explicit else "lock_timeout"
            raise PlanValueError(
                f"lock_timeout_max ({format_duration(self.lock_timeout_max)}) is shorter than "
                f"lock_timeout ({format_duration(self.lock_timeout)})",
                field,
            )
        return self


class Phases(PlanModel):
    """The steps of each phase; phases run in this order and any may be omitted."""

    additive: list[Step] = Field(default_factory=list)
    dual_write: list[Step] = Field(default_factory=list)
    backfill: list[Step] = Field(default_factory=list)
    dual_read: list[Step] = Field(default_factory=list)
    cleanup: list[Step] = Field(default_factory=list)

    def of(self, phase: Phase) -> list[StepSpec]:
        """The steps of ``phase``."""
        return cast(list[StepSpec], getattr(self, phase))


@dataclass(frozen=True)
class PlanStep:
    """A step with its place in the plan; ``key`` names it in state, logs and messages."""

    phase: Phase
    index: int
    spec: StepSpec

    @property
    def key(self) -> str:
        """``"cleanup[1]"``: phase and position within the phase."""
        return f"{self.phase}[{self.index}]"

    @property
    def kind(self) -> str:
        """The step's kind, e.g. ``"add_check"``."""
        return self.spec.kind


_NO_WORK = object()


class Plan(PlanModel):
    """A migration plan, version 1 (see DESIGN.md, "Plan format")."""

    model_config = ConfigDict(validate_by_name=True, title="zdm plan")

    version: Literal[1]
    """The plan format version."""
    name: str | None = Field(default=None, min_length=1)
    """Names the plan's runs and lock; defaults to the file name without extension."""
    description: str | None = None
    schema_: Name = Field(default="public", alias="schema")
    """Schema of unqualified table names."""
    settings: Settings = Settings()
    gates: list[Phase] = Field(default_factory=list)
    """Phases before which a run stops until ``zdm run --continue``."""
    version_schema: Name | None = None
    """The schema of the version views that ``changes`` expose the new shape in until cleanup;
    defaults to ``zdm_`` and the plan's name."""
    changes: list[Change] = Field(default_factory=list)
    """High-level changes, in order; zdm expands them into the five phases, ahead of each
    phase's own steps (``zdm expand PLAN`` prints the result)."""
    phases: Phases = Phases()

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_not_a_boolean(cls, value: Any) -> Any:
        # Literal[1] would accept True, since True == 1.
        if isinstance(value, bool):
            raise ValueError("expected the plan format version 1, got a boolean")
        return value

    @model_validator(mode="before")
    @classmethod
    def _has_work(cls, data: Any) -> Any:
        # Either may be left out, not both: report that as the missing `phases`.
        if isinstance(data, dict) and "phases" not in data and "changes" not in data:
            return {**data, "phases": _NO_WORK}
        return data

    @field_validator("phases", mode="before")
    @classmethod
    def _phases_given(cls, value: Any) -> Any:
        if value is _NO_WORK:
            raise PydanticCustomError("missing", "Field required")
        return value

    def iter_steps(self) -> Iterator[tuple[Phase, int, StepSpec]]:
        """Every step in execution order: phase by phase, then by position."""
        for phase in cast(tuple[Phase, ...], PHASES):
            for index, spec in enumerate(self.phases.of(phase)):
                yield phase, index, spec

    def steps(self) -> list[PlanStep]:
        """Every step in execution order, with its phase and index."""
        return [PlanStep(phase, index, spec) for phase, index, spec in self.iter_steps()]
