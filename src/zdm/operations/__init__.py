"""One planner per step kind: each turns a step into Actions and never touches a database."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from zdm.ddl import Action, Query
from zdm.operations import (
    columns,
    comments,
    constraints,
    data,
    dual_write,
    indexes,
    keys,
    partitioned,
    tables,
    types,
    views,
)
from zdm.operations.base import FORWARD, INVERSE, MEMO, Context, Irreversible
from zdm.plan import StepSpec

_MODULES = (columns, comments, constraints, data, dual_write, indexes, keys, tables, types, views)


def plan_step(step: StepSpec, ctx: Context) -> list[Action]:
    """The actions that carry out `step`, in order: partition by partition on a partitioned
    table (`zdm.operations.partitioned`)."""
    tree = partitioned.tree_of(step, ctx)
    planner = partitioned.FORWARD.get(type(step))
    if tree is not None and planner is not None:
        return planner(step, ctx, tree)
    return FORWARD[type(step)](step, ctx)


def plan_refusal(step: StepSpec, ctx: Context) -> str | None:
    """Why the step cannot run on its (partitioned) table as the database is: said up front."""
    return partitioned.refusal(step, ctx)


def plan_memo(step: StepSpec, ctx: Context) -> Query | None:
    """The catalog query whose value the run records right before `step` first runs, for its
    inverse; None when the plan alone says how to undo it."""
    memo = MEMO.get(type(step))
    return None if memo is None else memo(step, ctx)


def plan_inverse(
    step: StepSpec, ctx: Context, remembered: dict[str, Any] | None = None
) -> list[Action]:
    """The actions that undo `step`, given what it remembered; raises Irreversible for a drop of
    data, or when the inverse needs a record that is missing."""
    ctx = replace(ctx, remembered=remembered)
    tree = partitioned.tree_of(step, ctx)
    undo = partitioned.INVERSE.get(type(step))
    if tree is not None and undo is not None:
        return undo(step, ctx, tree)
    return INVERSE[type(step)](step, ctx)


__all__ = [
    "Context",
    "Irreversible",
    "plan_inverse",
    "plan_memo",
    "plan_refusal",
    "plan_step",
]
