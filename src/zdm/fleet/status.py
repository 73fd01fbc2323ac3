"""`zdm status --targets`: one row a target, read from each target's own zdm schema."""

from __future__ import annotations

from dataclasses import dataclass

from zdm.engine.session import scrub
from zdm.fleet.targets import load_targets
from zdm.state import StepStatus


@dataclass(frozen=True)
class TargetStatus:
    """One row of `zdm status --targets` (its fields, in order, are the table's columns)."""

    target: str
    status: str
    """The run's status, or `unreachable`, or `not started`."""
    phase: str | None = None
    step: str | None = None
    progress: str | None = None
    last_error: str | None = None


def fleet_status(targets: str, plan: str | None, state_schema: str = "zdm") -> list[TargetStatus]:
    from zdm import api

    rows = []
    for t in load_targets(targets):
        try:
            runs = api.status(t.dsn, plan, state_schema=state_schema)
        except Exception as e:
            rows.append(TargetStatus(t.label, "unreachable", last_error=scrub(str(e))))
            continue
        if not runs:
            rows.append(TargetStatus(t.label, "not started"))
            continue
        for r in runs:
            done = sum(1 for s in r.steps if s.status == StepStatus.DONE)
            progress = f"{done}/{len(r.steps)} steps"
            for b in r.backfill_steps:
                if not b.done:
                    progress += f", {b.step} {b.rows_done}/{b.rows_estimated} rows"
            rows.append(
                TargetStatus(
                    t.label,
                    r.status,
                    r.phase,
                    r.step,
                    progress,
                    scrub(r.last_error) if r.last_error else None,
                )
            )
    return rows
