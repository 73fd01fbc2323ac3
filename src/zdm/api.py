"""Library verbs behind the CLI: run, dry-run, status, validate, pause/resume."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The engine and psycopg are imported by the verbs that use them: `zdm validate` and
# `zdm --help` start without them.
if TYPE_CHECKING:
    import psycopg

    from zdm.engine.migrate import MigrateOutcome
    from zdm.engine.runner import Outcome
    from zdm.plan import LoadedPlan
    from zdm.plan.expand import FactReader


def run_plan(
    path: str | Path,
    dsn: str,
    *,
    until: str | None = None,
    cont: bool = False,
    force: bool = False,
    state_schema: str = "zdm",
) -> Outcome:
    from zdm.engine.runner import Runner

    loaded = _load(path, dsn)
    return Runner(loaded, dsn, state_schema=state_schema).run(until=until, cont=cont, force=force)


def rollback(path: str | Path, dsn: str, *, state_schema: str = "zdm") -> Outcome:
    from zdm.engine.rollback import Rollback

    return Rollback(_load(path, dsn), dsn, state_schema=state_schema).rollback()


def rollback_dry_run(path: str | Path, dsn: str, *, state_schema: str = "zdm") -> str:
    from zdm.engine.rollback import Rollback

    lines = Rollback(_load(path, dsn), dsn, state_schema=state_schema).dry_run_lines()
    return "\n".join(lines) + "\n"


def dry_run(path: str | Path, dsn: str | None, *, state_schema: str = "zdm") -> str:
    from zdm.engine.dryrun import dry_run_text

    return dry_run_text(_load(path, dsn), dsn, state_schema=state_schema)


def load(path: str | Path, dsn: str | None = None) -> LoadedPlan:
    """A plan file, or a Flyway-style `V001__name.sql` migration adopted as a one-step plan."""
    return _load(path, dsn)


def plan_name(path: str | Path) -> str:
    """The name a plan file's runs go by (its changes need no database for that)."""
    from zdm.plan.expand import offline_facts

    return load_any(path, offline_facts).name


def _load(path: str | Path, dsn: str | None) -> LoadedPlan:
    """The plan with its changes expanded; a change that copies a column reads the live
    catalog through `dsn`."""
    from zdm.engine.facts import catalog_facts

    with catalog_facts(dsn) as facts:
        return load_any(path, facts)


def expand(path: str | Path, dsn: str | None = None) -> str:
    """The plan's five phases, its `changes` expanded, as a YAML plan file."""
    from zdm.plan.dump import expanded_yaml

    return expanded_yaml(_load(path, dsn))


def load_any(path: str | Path, facts: FactReader | None = None) -> LoadedPlan:
    from zdm.engine.migrate import load_any as load_plan_or_sql

    return load_plan_or_sql(path, facts)


def migrate(
    directory: str | Path,
    dsn: str,
    *,
    force: bool = False,
    cont: bool = False,
    state_schema: str = "zdm",
) -> MigrateOutcome:
    """Applies a directory's plans in version order; stops at a gate or a failure."""
    from zdm.engine.migrate import Migrator

    return Migrator(directory, dsn, state_schema=state_schema).migrate(force=force, cont=cont)


def migrate_dry_run(
    directory: str | Path, dsn: str | None, *, force: bool = False, state_schema: str = "zdm"
) -> str:
    """What `migrate` would apply, with each pending plan's dry-run."""
    from zdm.engine.migrate import Migrator

    lines = Migrator(directory, dsn, state_schema=state_schema).dry_run_lines(force=force)
    return "\n".join(lines) + "\n"


def history(
    dsn: str, directory: str | Path | None = None, *, state_schema: str = "zdm"
) -> list[dict[str, Any]]:
    """Applied migrations (and, given the directory, the pending ones) in version order."""
    from zdm.engine.migrate import history as migration_history

    return migration_history(dsn, directory, state_schema=state_schema)


def validate(
    path: str | Path, dsn: str | None = None, *, state_schema: str = "zdm"
) -> tuple[LoadedPlan, list[str]]:
    """Loads the plan (raising PlanError); with a database, checks it against the live schema."""
    from zdm.plan.expand import offline_facts

    # Without a database, changes that read the live catalog are checked as written.
    loaded = _load(path, dsn) if dsn is not None else load_any(path, offline_facts)
    problems: list[str] = []
    if dsn is not None:
        from zdm.engine.partitions import partition_refusals
        from zdm.engine.preflight import live_schema_problems
        from zdm.engine.probe import expression_issues, pending_keys
        from zdm.engine.session import connect
        from zdm.state import Store

        with connect(dsn, f"validate {loaded.name}") as conn:
            problems = [
                f"{loaded.path}:{_step_line(loaded, p)}: {p}"
                for p in live_schema_problems(conn, loaded)
            ]
            pending = pending_keys(conn, Store(state_schema), loaded.name)
            problems += [str(issue) for issue in expression_issues(conn, loaded, pending)]
            problems += [str(issue) for issue in partition_refusals(conn, loaded, pending)]
    return loaded, problems


def _step_line(loaded: LoadedPlan, problem: str) -> str:
    """The line of the step a problem of `live_schema_problems` names first (`additive[0] …`)."""
    return str(loaded.step_line(problem.split(" ", 1)[0]) or "")


def scan(path: str | Path, dsn: str) -> list[Any]:
    """Each mapping of the plan evaluated on its table's rows (`zdm validate --scan`): a
    `zdm.engine.scan.Scanned` per mapping, with the rows it cannot convert."""
    from zdm.engine.scan import scan_mappings
    from zdm.engine.session import connect

    loaded = _load(path, dsn)
    with connect(dsn, f"scan {loaded.name}") as conn:
        return scan_mappings(conn, loaded)


def status(dsn: str, plan: str | None = None, *, state_schema: str = "zdm") -> list[dict[str, Any]]:
    """The state of each plan's latest run, with its steps and backfill progress."""
    from zdm.engine.session import connect
    from zdm.state import Store
    from zdm.state.mapping_errors import BAD_ROWS_SHOWN, trigger_errors

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
                # The rate each checkpoint records is recent (pauses included); a dead run has none.
                rate = round(b.rate, 1) if b.rate and alive and not b.done else None
                remaining = max((b.rows_estimated or 0) - b.rows_done, 0)
                entry["backfills"].append(
                    {
                        **asdict(b),
                        "step": step.key if step else None,
                        "rows_per_s": rate,
                        "eta_s": round(remaining / rate) if rate else None,
                    }
                )
            entry["backfill_steps"] = _backfill_steps(entry["backfills"])
            entry["mapping_errors"] = trigger_errors(conn, state_schema, name)
            bad = store.mapping_errors(conn, name) if unfinished else []
            entry["bad_rows"] = {"count": len(bad), "first": bad[:BAD_ROWS_SHOWN]}
            out.append(entry)
        return out


def _backfill_steps(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each backfill step's progress over all its workers (they walk in parallel) and, for a
    partitioned table, over each partition's walk (`partitions`)."""
    steps: dict[Any, list[dict[str, Any]]] = {}
    for w in workers:
        steps.setdefault(w["ordinal"], []).append(w)
    out = []
    for rows in steps.values():
        parts: dict[str, list[dict[str, Any]]] = {}
        for w in rows:
            parts.setdefault(w.get("part") or "", []).append(w)
        entry = _progress(rows)
        entry["workers"] = max(len(r) for r in parts.values())
        entry["partitions"] = (
            [{"part": part, **_progress(r)} for part, r in parts.items()] if "" not in parts else []
        )
        out.append(entry)
    return out


def _progress(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The progress of walks in parallel (a step's workers, or one partition's)."""
    rates = [w["rows_per_s"] for w in rows if w["rows_per_s"]]
    etas = [w["eta_s"] for w in rows if w["eta_s"] is not None and not w["done"]]
    sizes = [w["batch_size"] for w in rows if w["batch_size"] and not w["done"]]
    return {
        "ordinal": rows[0]["ordinal"],
        "step": rows[0]["step"],
        "workers": len(rows),
        "workers_done": sum(1 for w in rows if w["done"]),
        "rows_done": sum(w["rows_done"] for w in rows),
        "rows_updated": sum(w["rows_updated"] for w in rows),
        "rows_estimated": sum(w["rows_estimated"] or 0 for w in rows),
        "rows_per_s": round(sum(rates), 1) if rates else None,
        "eta_s": max(etas) if etas else None,
        "batch_size": round(sum(sizes) / len(sizes)) if sizes else None,
        "batches": sum(w["batches"] for w in rows),
        "throttle": next((w["throttle"] for w in rows if w["throttle"]), None),
        "done": all(w["done"] for w in rows),
    }


def _owner_alive(conn: psycopg.Connection[Any], plan: str) -> bool:
    from zdm.state.lock import PlanLock

    return PlanLock(conn, plan).holder() is not None


def pause(dsn: str, plan: str, paused: bool, *, state_schema: str = "zdm") -> Any:
    from zdm.engine.session import connect
    from zdm.state import Store

    store = Store(state_schema)
    with connect(dsn, "pause") as conn:
        if not store.exists(conn):
            return None
        return store.request_pause(conn, plan, paused)


def now() -> datetime:
    return datetime.now(UTC)
