"""Why a run does not start: kept apart from the runner so that loading a plan imports no engine."""

from __future__ import annotations


class PlanChanged(Exception):
    """The plan file differs from the one the unfinished run started with (exit 2 without --force)."""


class RunRefused(Exception):
    """The run cannot proceed in its current state, e.g. a rollback is under way (exit 2)."""


class MigrationsRefused(RunRefused):
    """The directory cannot be migrated as it is (exit 2)."""
