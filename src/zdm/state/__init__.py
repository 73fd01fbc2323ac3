"""zdm's persisted state: runs, steps, backfill checkpoints, events; and the per-plan run lock."""

from zdm.state.lock import LockHeld, PlanLock
from zdm.state.store import BackfillRow, IllegalTransition, NewStep, Run, StepRow, Store

__all__ = [
    "BackfillRow",
    "IllegalTransition",
    "LockHeld",
    "NewStep",
    "PlanLock",
    "Run",
    "StepRow",
    "Store",
]
