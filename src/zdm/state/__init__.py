"""zdm's persisted state: runs, steps, backfill checkpoints, events; and the per-plan run lock."""

from zdm.state.lock import LockHeld, PlanLock
from zdm.state.statuses import Direction, ErrorSource, RunStatus, StepStatus
from zdm.state.store import BackfillRow, IllegalTransition, NewStep, Run, StepRow, Store

__all__ = [
    "BackfillRow",
    "Direction",
    "ErrorSource",
    "IllegalTransition",
    "LockHeld",
    "NewStep",
    "PlanLock",
    "Run",
    "RunStatus",
    "StepRow",
    "StepStatus",
    "Store",
]
