"""One planner per step kind: each turns a step into Actions and never touches a database."""

from __future__ import annotations

from zdm.ddl import Action
from zdm.operations import columns, constraints, data, dual_write, indexes, tables, views
from zdm.operations.base import FORWARD, INVERSE, Context, Irreversible
from zdm.plan import StepSpec

_MODULES = (columns, constraints, data, dual_write, indexes, tables, views)


def plan_step(step: StepSpec, ctx: Context) -> list[Action]:
    """The actions that carry out `step`, in order."""
    return FORWARD[type(step)](step, ctx)


def plan_inverse(step: StepSpec, ctx: Context) -> list[Action]:
    """The actions that undo `step`; raises Irreversible for a drop of data."""
    return INVERSE[type(step)](step, ctx)


__all__ = ["Context", "Irreversible", "plan_inverse", "plan_step"]
