"""Plan rules about the dual-write's writers and about step orders rollback cannot undo.

`rollback-refused` asks the very inverse planners `zdm rollback` uses, so what lint flags is
exactly what a rollback would refuse up front (exit 2, nothing undone).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from zdm.plan import DropDualWrite, DualWrite, Expose, Plan, Unexpose, split_qualified

if TYPE_CHECKING:
    from zdm.lint.plan_rules import PlanProblem


def rollback_refused(plan: Plan) -> Iterator[PlanProblem]:
    from zdm.lint.plan_rules import PlanProblem
    from zdm.operations import Context, Irreversible, plan_inverse

    ctx = Context(plan.schema_, plan=plan)
    for step in plan.steps():
        if not isinstance(step.spec, (DropDualWrite, Unexpose)):
            continue
        try:
            plan_inverse(step.spec, ctx)
        except Irreversible as e:
            yield PlanProblem(
                step,
                f"a rollback of this plan past {step.key} would be refused: {e}",
                "drop the dual-write trigger before renaming what it reads, and give every"
                " unexpose the expose step that made its views, so that rollback can rebuild them",
            )


def dual_write_writer_unknown(plan: Plan) -> Iterator[PlanProblem]:
    """A plan with a gate expects a new application version to run beside the old one; a
    reverse mapping is for that version's writes, which zdm must be able to tell apart."""
    if not plan.gates:
        return
    exposed = {
        split_qualified(t.table, plan.schema_)
        for _, _, spec in plan.iter_steps()
        if isinstance(spec, Expose)
        for t in spec.tables
    }
    from zdm.lint.plan_rules import PlanProblem

    for step in plan.steps():
        spec = step.spec
        if not isinstance(spec, DualWrite) or not spec.reverse:
            continue
        if split_qualified(spec.table, plan.schema_) in exposed:
            continue
        yield PlanProblem(
            step,
            f"the dual_write on {spec.table} has a reverse mapping for the new application "
            "version, but no expose step gives that version views to write through: a write "
            "to the base table counts as the new version's only in a transaction with "
            "zdm.writer = 'new' (or an UPDATE that changes a new column itself); any other "
            "write is the old version's, and `set` overwrites the new columns it gave",
            "have the new version run SET zdm.writer = 'new' (or SET LOCAL in each "
            "transaction, or ALTER ROLE <its role> SET zdm.writer = 'new'), or add an expose "
            "step for the table in dual_read",
        )


RENAME_EXAMPLE = (
    "version: 1\nphases:\n  dual_write:\n"
    "    - dual_write: {table: people, set: {name_v2: upper(name)}}\n  cleanup:\n"
)
REVERSE_EXAMPLE = (
    "version: 1\ngates: [cleanup]\nphases:\n  dual_write:\n    - dual_write:\n        table: reviews\n"
    "        set: {rating_new: CAST(rating AS integer)}\n"
    "        reverse: {rating: CAST(rating_new AS text)}\n"
)
