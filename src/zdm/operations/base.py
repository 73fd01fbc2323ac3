"""What every operation shares: the planning context and the registry of step kinds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from zdm.ddl import Action, Query, Table
from zdm.ddl.partitions import Partitioning
from zdm.plan import DualWrite, LoadedPlan, Plan, StepSpec

LATEST_SERVER_VERSION = 180000


class Irreversible(Exception):
    """Raised by an inverse planner for a step whose effect cannot be undone (a drop of data), or
    not exactly (an object its record cannot rebuild as it was)."""


@dataclass(frozen=True)
class Context:
    """What a planner may know besides its step: the plan's schema, the server, earlier steps."""

    schema: str = "public"
    server_version: int = LATEST_SERVER_VERSION
    plan: Plan | None = None
    base_dir: Path | None = None
    remembered: dict[str, Any] | None = None
    """For an inverse planner: what its step recorded before its first attempt (its memo
    query's value), or None when nothing was recorded (a step run by an older zdm)."""
    state_schema: str = "zdm"
    """zdm's state schema, where a dual-write trigger records the rows its mapping fails on."""
    plan_name: str = ""
    """The plan's name as its runs know it (the file's name when the plan gives none)."""
    partitions: dict[Table, Partitioning] = field(default_factory=dict)
    """The partitioned tables among the plan's, as the engine read them right before the step
    (empty without a database): planners choose their per-partition recipes from it."""

    @classmethod
    def of(cls, loaded: LoadedPlan, server_version: int, state_schema: str) -> Context:
        """The context of a loaded plan's steps on a server (run, rollback and dry-run)."""
        return cls(
            loaded.plan.schema_,
            server_version,
            loaded.plan,
            loaded.base_dir,
            state_schema=state_schema,
            plan_name=loaded.name,
        )

    def table(self, name: str) -> Table:
        return Table.parse(name, self.schema)

    def partitioning(self, table: Table) -> Partitioning | None:
        """The table's partitions when it is partitioned (as far as the engine knows)."""
        return self.partitions.get(table)

    def dual_writes(self, table: Table) -> list[DualWrite]:
        """The plan's dual_write steps on `table` (their triggers may read its columns)."""
        if self.plan is None:
            return []
        return [
            spec
            for _, _, spec in self.plan.iter_steps()
            if isinstance(spec, DualWrite) and self.table(spec.table) == table
        ]


def recorded(ctx: Context, what: str, of: str) -> dict[str, Any]:
    """What the step recorded before its first attempt, for its inverse; Irreversible when
    there is no record."""
    if ctx.remembered is None:
        raise Irreversible(
            f"{what}: zdm's state has no record of {of} (a step run by an older zdm has none)"
        )
    return ctx.remembered


Planner = Callable[[Any, Context], list[Action]]
MemoPlanner = Callable[[Any, Context], Query | None]
_S = TypeVar("_S", bound=StepSpec)

FORWARD: dict[type[StepSpec], Planner] = {}
INVERSE: dict[type[StepSpec], Planner] = {}
MEMO: dict[type[StepSpec], MemoPlanner] = {}


def forward(kind: type[_S]) -> Callable[[Callable[[_S, Context], list[Action]]], Planner]:
    def register(fn: Callable[[_S, Context], list[Action]]) -> Planner:
        FORWARD[kind] = fn
        return fn

    return register


def inverse(kind: type[_S]) -> Callable[[Callable[[_S, Context], list[Action]]], Planner]:
    def register(fn: Callable[[_S, Context], list[Action]]) -> Planner:
        INVERSE[kind] = fn
        return fn

    return register


def irreversible(kind: type[_S], why: Callable[[_S], str]) -> None:
    """Registers the inverse of a step kind that destroys what undoing it would need (its data):
    rollback refuses it, saying `why`."""

    def refuse(step: _S, ctx: Context) -> list[Action]:
        raise Irreversible(why(step))

    INVERSE[kind] = refuse


def remembers(
    kind: type[_S],
) -> Callable[[Callable[[_S, Context], Query | None]], MemoPlanner]:
    """Registers the catalog query (one jsonb value) whose answer right before the step's first
    attempt the inverse needs: the value the step replaces, which the plan does not say. The
    planner may return None where the server leaves nothing to remember."""

    def register(fn: Callable[[_S, Context], Query | None]) -> MemoPlanner:
        MEMO[kind] = fn
        return fn

    return register
