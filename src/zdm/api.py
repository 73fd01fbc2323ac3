"""Library verbs behind the CLI: run, dry-run, status, validate, pause/resume."""

from __future__ import annotations

from dataclasses import asdict
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
    from zdm.state import Run
    from zdm.state.overview import MigrationEntry, RunState


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
    from zdm.plan.migration_files import load_any as load_plan_or_sql

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
) -> list[MigrationEntry]:
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


def status(dsn: str, plan: str | None = None, *, state_schema: str = "zdm") -> list[RunState]:
    """The state of each plan's latest run, with its steps and backfill progress."""
    from zdm.engine.session import connect
    from zdm.state import StepStatus, Store
    from zdm.state.mapping_errors import BAD_ROWS_SHOWN, trigger_errors
    from zdm.state.overview import BackfillProgress, ErrorSample, RunState, WorkerProgress

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
            alive = _owner_alive(conn, name)
            unfinished = not run.status.finished
            current = (
                next((s for s in steps if s.status != StepStatus.DONE), None)
                if unfinished
                else None
            )
            keys = {s.ordinal: s.key for s in steps}
            workers = []
            for b in store.backfills(conn, run.id):
                # The rate each checkpoint records is recent (pauses included); a dead run has none.
                rate = round(b.rate, 1) if b.rate and alive and not b.done else None
                remaining = max((b.rows_estimated or 0) - b.rows_done, 0)
                workers.append(
                    WorkerProgress(
                        **asdict(b),
                        step=keys.get(b.ordinal),
                        rows_per_s=rate,
                        eta_s=round(remaining / rate) if rate else None,
                    )
                )
            by_step: dict[int, list[WorkerProgress]] = {}
            for w in workers:
                by_step.setdefault(w.ordinal, []).append(w)
            bad = store.mapping_errors(conn, name) if unfinished else []
            out.append(
                RunState(
                    **asdict(run),
                    owner_alive=alive,
                    steps=steps,
                    backfills=workers,
                    step=f"{current.key} {current.kind}" if current else None,
                    backfill_steps=[BackfillProgress.of(ws) for ws in by_step.values()],
                    mapping_errors=ErrorSample(**trigger_errors(conn, state_schema, name)),
                    bad_rows=ErrorSample(len(bad), bad[:BAD_ROWS_SHOWN]),
                )
            )
        return out


def _owner_alive(conn: psycopg.Connection[Any], plan: str) -> bool:
    from zdm.state.lock import PlanLock

    return PlanLock(conn, plan).holder() is not None


def pause(dsn: str, plan: str, paused: bool, *, state_schema: str = "zdm") -> Run | None:
    from zdm.engine.session import connect
    from zdm.state import Store

    store = Store(state_schema)
    with connect(dsn, "pause") as conn:
        if not store.exists(conn):
            return None
        return store.request_pause(conn, plan, paused)
