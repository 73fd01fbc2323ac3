"""The statuses of runs and steps: one set each, which the code compares against and from which
the state tables' CHECK constraints are written (state/schema.py)."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    FAILED = "failed"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"

    @property
    def finished(self) -> bool:
        """The run is over: a new run of its plan may start."""
        return self in FINISHED


FINISHED = (RunStatus.COMPLETED, RunStatus.ROLLED_BACK)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


class Direction(StrEnum):
    FORWARD = "forward"
    ROLLBACK = "rollback"


class ErrorSource(StrEnum):
    """What recorded a row the mapping could not convert."""

    TRIGGER = "trigger"
    BACKFILL = "backfill"
    SCAN = "scan"
