"""Calling zdm from a framework's migration (an Alembic revision, a Django ``RunPython``).

The framework keeps its own history; a revision hands one change to zdm, which runs it with its
own connections, lock policy, checkpoints and state, so a killed deploy resumes where it
stopped. Two verbs:

- `run_plan` runs (or resumes) a plan and raises `ZdmRunFailed` unless it completed;
- `require_completed` raises `PlanNotCompleted` unless a plan's latest run completed, for a
  revision whose own DDL depends on a change zdm makes.

A plan runs on zdm's own connections, not the framework's transaction: give the revision no
other DDL on the plan's tables (in Alembic, call it inside ``op.get_context().autocommit_block()``
or in a revision with ``transaction_per_migration``; in Django, a migration with
``atomic = False``), or the framework's open transaction can block zdm's statements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zdm import api
from zdm.state import RunStatus

__all__ = [
    "PlanNotCompleted",
    "ZdmRunFailed",
    "django_dsn",
    "require_completed",
    "run_plan",
]


class ZdmRunFailed(Exception):
    """A plan did not complete: it failed (resumable), stopped at a gate, or was refused."""

    def __init__(self, plan: str, status: str, message: str, exit_code: int) -> None:
        super().__init__(f"zdm plan {plan}: {status}: {message}")
        self.status = status
        self.exit_code = exit_code


class PlanNotCompleted(Exception):
    """A plan a migration depends on has not completed on this database."""


def run_plan(plan: str | Path, dsn: str, *, cont: bool = False, state_schema: str = "zdm") -> None:
    """Run or resume ``plan`` to its end; raise `ZdmRunFailed` unless it completed.

    ``cont`` passes a gate the run waits at (as ``zdm run --continue``).
    """
    _logs_on_stderr()
    outcome = api.run_plan(plan, dsn, cont=cont, state_schema=state_schema)
    if outcome.status != RunStatus.COMPLETED:
        raise ZdmRunFailed(str(plan), outcome.status, outcome.message, outcome.exit_code)


def _logs_on_stderr() -> None:
    """zdm's log lines on stderr at info level, unless the application configured structlog."""
    import structlog

    if not structlog.is_configured():
        from zdm.logs import configure

        configure("console", "info")


def require_completed(plan: str | Path, dsn: str, *, state_schema: str = "zdm") -> None:
    """Raise `PlanNotCompleted` unless the latest run of ``plan`` (a file or a plan name)
    completed on the database ``dsn``."""
    path = Path(plan)
    name = api.load(path).name if path.suffix in (".yaml", ".yml") else str(plan)
    runs = api.status(dsn, name, state_schema=state_schema)
    if not runs:
        raise PlanNotCompleted(f"zdm plan {name} has never run here: `zdm run` it first")
    if runs[0].status != RunStatus.COMPLETED:
        raise PlanNotCompleted(
            f"zdm plan {name} is {runs[0].status} (run {runs[0].id}), not completed: "
            "finish it with `zdm run` first"
        )


def django_dsn(connection: Any) -> str:
    """A libpq connection string for a Django database connection (``schema_editor.connection``
    in ``RunPython``)."""
    from psycopg.conninfo import make_conninfo

    settings = connection.settings_dict
    params = {
        "dbname": settings.get("NAME"),
        "user": settings.get("USER"),
        "password": settings.get("PASSWORD"),
        "host": settings.get("HOST"),
        "port": str(settings["PORT"]) if settings.get("PORT") else None,
    }
    return make_conninfo(**{k: v for k, v in params.items() if v})
