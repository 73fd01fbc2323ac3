"""Library verbs behind the CLI: run, dry-run, status, validate, pause/resume."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from zdm.engine.dryrun import dry_run_text
from zdm.engine.runner import Outcome, Runner
from zdm.engine.session import connect
from zdm.plan import LoadedPlan, load_plan
from zdm.state import Store


def run_plan(
    path: str | Path,
    dsn: str,
    *,
    until: str | None = None,
    cont: bool = False,
    force: bool = False,
    state_schema: str = "zdm",
) -> Outcome:
    loaded = load_plan(path)
    return Runner(loaded, dsn, state_schema=state_schema).run(until=until, cont=cont, force=force)


def rollback(path: str | Path, dsn: str, *, state_schema: str = "zdm") -> Outcome:
    from zdm.engine.rollback import Rollback

    return Rollback(load_plan(path), dsn, state_schema=state_schema).rollback()


def rollback_dry_run(path: str | Path, dsn: str, *, state_schema: str = "zdm") -> str:
    from zdm.engine.rollback import Rollback

    lines = Rollback(load_plan(path), dsn, state_schema=state_schema).dry_run_lines()
    return "\n".join(lines) + "\n"


def dry_run(path: str | Path, dsn: str | None, *, state_schema: str = "zdm") -> str:
    return dry_run_text(load_plan(path), dsn, state_schema=state_schema)


def validate(path: str | Path, dsn: str | None = None) -> tuple[LoadedPlan, list[str]]:
    """Loads the plan (raising PlanError); with a database, checks it against the live schema."""
    loaded = load_plan(path)
    problems: list[str] = []
    if dsn is not None:
        from zdm.engine.preflight import live_schema_problems

        with connect(dsn, f"validate {loaded.name}") as conn:
            problems = live_schema_problems(conn, loaded)
    return loaded, problems


def status(dsn: str, plan: str | None = None, *, state_schema: str = "zdm") -> list[dict[str, Any]]:
    """The state of each plan's latest run, with its steps and backfill progress."""
    store = Store(state_schema)
    with connect(dsn, "status") as conn:
        if not store.exists(conn):
            return []
        names = [plan] if plan else store.all_plans(conn)
        out = []
        for name in names:
            run = store.latest_run(conn, name)
            if run is None:
                continue
            steps = store.steps(conn, run.id)
            backfills = store.backfills(conn, run.id)
            alive = _owner_alive(conn, name)
            entry: dict[str, Any] = {
                **asdict(run),
                "owner_alive": alive,
                "steps": [{**asdict(s), "key": s.key} for s in steps],
                "backfills": [],
            }
            unfinished = run.status not in ("completed", "rolled_back")
            current = next((s for s in steps if s.status != "done"), None) if unfinished else None
            entry["step"] = f"{current.key} {current.kind}" if current else None
            for b in backfills:
                step = next((s for s in steps if s.ordinal == b.ordinal), None)
                rate = _rate(b.rows_done, b.started_at, b.updated_at) if not b.done else None
                remaining = max((b.rows_estimated or 0) - b.rows_done, 0)
                entry["backfills"].append(
                    {
                        **asdict(b),
                        "step": step.key if step else None,
                        "rows_per_s": rate,
                        "eta_s": round(remaining / rate) if rate else None,
                    }
                )
            out.append(entry)
        return out


def _rate(rows: int, start: datetime, end: datetime) -> float | None:
    seconds = (end - start).total_seconds()
    return round(rows / seconds, 1) if seconds > 0 and rows else None


def _owner_alive(conn: psycopg.Connection[Any], plan: str) -> bool:
    from zdm.state.lock import PlanLock

    return PlanLock(conn, plan).holder() is not None


def pause(dsn: str, plan: str, paused: bool, *, state_schema: str = "zdm") -> Any:
    store = Store(state_schema)
    with connect(dsn, "pause") as conn:
        if not store.exists(conn):
            return None
        return store.request_pause(conn, plan, paused)


def now() -> datetime:
    return datetime.now(UTC)
