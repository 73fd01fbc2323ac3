"""Several backfill steps of one table walked in one pass, when they are independent."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import structlog

from zdm.ddl import BackfillJob
from zdm.engine.backfill.mapping import job_where
from zdm.operations import Context, plan_step
from zdm.plan import PlanStep


def backfill_followers(
    steps: Sequence[PlanStep], statuses: Sequence[str], ordinal: int, ctx: Context
) -> list[tuple[int, BackfillJob]]:
    """The backfill steps right after `ordinal` that its walk can do in the same pass.

    They must be in the same phase, on the same table, not done yet, and independent of the
    earlier ones (see `merge_conflict`); the first that is not ends the group.
    """
    lead = steps[ordinal]
    walk = _job_of(lead, ctx)
    if walk is None:
        return []
    jobs = [walk]
    found: list[tuple[int, BackfillJob]] = []
    for o in range(ordinal + 1, len(steps)):
        step = steps[o]
        if step.phase != lead.phase or statuses[o] == "done":
            break
        job = _job_of(step, ctx)
        if job is None:
            break
        why = merge_conflict(jobs, job)
        if why is not None:
            if job.table == walk.table:
                structlog.get_logger("zdm.backfill").info(
                    "backfill_not_merged", step=step.key, table=str(job.table), reason=why
                )
            break
        jobs.append(job)
        found.append((o, job))
    return found


def _job_of(step: PlanStep, ctx: Context) -> BackfillJob | None:
    if step.kind != "backfill":
        return None
    actions = plan_step(step.spec, ctx)
    jobs = [a for a in actions if isinstance(a, BackfillJob)]
    return jobs[0] if len(jobs) == 1 and len(actions) == 1 else None


def merge_conflict(walk: Sequence[BackfillJob], job: BackfillJob) -> str | None:
    """Why `job` cannot join the walk of the earlier `walk` jobs (None when it can).

    One UPDATE evaluates every expression over the row as it was before the batch; run one
    after the other, a later step would see what an earlier one wrote. So a later job must not
    set or read a column an earlier one sets; and options, sources must be the same.
    """
    first = walk[0]
    if job.table != first.table:
        return "another table"
    if job.source is not None or first.source is not None:
        return "a cross-table backfill (from) walks alone"
    if _walk_options(job) != _walk_options(first):
        return "different batch or throttle options"
    earlier = {c for j in walk for c in j.set}
    if earlier & set(job.set):
        return f"sets {', '.join(sorted(earlier & set(job.set)))} again"
    text = " ".join([job_where(job), *job.set.values()])
    read = sorted(c for c in earlier if _mentions(text, c))
    if read:
        return f"reads {', '.join(read)}, which an earlier backfill sets"
    return None


def _walk_options(job: BackfillJob) -> dict[str, Any]:
    opts = job.options
    if opts is None or not hasattr(opts, "model_dump"):
        return {}
    dumped: dict[str, Any] = opts.model_dump(exclude={"table", "set", "where", "from_"})
    return dumped


def _mentions(text: str, column: str) -> bool:
    """Whether SQL `text` may name `column` (a word match, quoted or not; errs on yes)."""
    return re.search(rf"(?<![\w$]){re.escape(column)}(?![\w$])", text, re.IGNORECASE) is not None
