"""`zdm migrate`: a directory of plans applied in version order, each recorded with its checksum.

File names give the order: `V001__add_phone.yaml` (Flyway style; `V1_2__x` is version 1.2) or
`20250108120000_add_phone.yaml` (a number, such as a timestamp, then `_`). Flyway migrations
`V001__x.sql` are adopted as they are: each becomes a plan with one `sql` step whose `up_file`
is the file and whose `down_file` is its undo file, `U001__*.sql` or `R001__*.sql`, when there
is one (next to it, in `rollback/` or `undo/` beside or below it).

Each plan runs through the ordinary Runner, so gates, failures, locks and resumes behave as for
`zdm run`; a migration is recorded in `zdm.migrations` once its run has completed. An applied
file that changed since is refused (exit 2) unless `--force`, which accepts it as it is now.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zdm.engine.refusals import MigrationsRefused as MigrationsRefused  # re-exported
from zdm.engine.refusals import PlanChanged
from zdm.plan import LoadedPlan, PlanError, PlanIssue, load_plan
from zdm.plan.migration_files import (
    Version,
    adopt_sql,
    file_sha256,
    is_sql,
    migration_name,
    undo_files,
)
from zdm.plan.migration_files import version_key as version_key  # re-exported
from zdm.state.statuses import RunStatus, StepStatus

# Applying or listing migrations needs the engine: it is imported where they are.
if TYPE_CHECKING:
    import psycopg

    from zdm.plan.expand import FactReader
    from zdm.state.migrations import MigrationRow
    from zdm.state.overview import MigrationEntry

#: Name of the advisory lock one `zdm migrate` holds, so two never interleave their plans.
MIGRATE_LOCK = "zdm migrate"


class MigrationsChanged(PlanChanged):
    """An applied migration's file changed since it was applied (exit 2 without --force)."""


@dataclass(frozen=True)
class Migration:
    """One file of a migrations directory."""

    version: str
    """As the file name writes it: `001`, `1.2`, `20250108120000`."""
    name: str
    path: Path
    sha256: str
    undo: Path | None = None

    @property
    def key(self) -> Version:
        return version_key(self.version)

    @property
    def file(self) -> str:
        return self.path.name

    @property
    def is_sql(self) -> bool:
        return is_sql(self.path)


def scan(directory: str | Path) -> list[Migration]:
    """The directory's migrations in version order; refuses duplicate versions."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MigrationsRefused(f"{directory} is not a directory of migrations")
    undo = undo_files(directory)
    migrations: list[Migration] = []
    import structlog

    log = structlog.get_logger("zdm.migrate")
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        name = migration_name(path.name)
        if name is None or not name.versioned or name.version is None:
            if path.suffix.lower() in (".yaml", ".yml", ".sql") and not (name and name.undo):
                log.warning("migration_file_ignored", file=str(path), reason="no version in name")
            continue
        migrations.append(
            Migration(
                version=name.version,
                name=name.description,
                path=path,
                sha256=file_sha256(path),
                undo=undo.get(name.key) if name.ext == "sql" else None,
            )
        )
    migrations.sort(key=lambda mig: mig.key)
    for previous, current in itertools.pairwise(migrations):
        if previous.key == current.key:
            raise MigrationsRefused(
                f"{previous.file} and {current.file} have the same version; give each its own"
            )
    return migrations


def _load(migration: Migration, facts: FactReader | None = None) -> LoadedPlan:
    if migration.is_sql:
        return adopt_sql(migration.path, migration.undo)
    return load_plan(migration.path, facts)


@dataclass(frozen=True)
class MigrateOutcome:
    status: str
    """completed (nothing left to apply), waiting (at a gate), failed or paused."""
    message: str
    exit_code: int
    applied: tuple[str, ...] = ()
    """Files this call applied, in order."""


class Migrator:
    """Applies, previews and lists the migrations of one directory."""

    def __init__(
        self, directory: str | Path, dsn: str | None, *, state_schema: str = "zdm", log: Any = None
    ) -> None:
        self.directory = Path(directory)
        self.dsn = dsn
        self.state_schema = state_schema
        from zdm.state import Store

        self.store = Store(state_schema)
        import structlog

        self.log = log or structlog.get_logger("zdm.migrate")

    def load(self) -> list[tuple[Migration, LoadedPlan]]:
        """Every migration with its plan; every file is checked before anything runs."""
        from zdm.engine.facts import catalog_facts

        loaded: list[tuple[Migration, LoadedPlan]] = []
        issues: list[PlanIssue] = []
        with catalog_facts(self.dsn) as facts:
            for m in scan(self.directory):
                try:
                    loaded.append((m, _load(m, facts)))
                except PlanError as error:
                    issues += error.issues
        if issues:
            raise PlanError(issues)
        seen: dict[str, str] = {}
        for m, plan in loaded:
            if plan.name in seen:
                raise MigrationsRefused(
                    f"{seen[plan.name]} and {m.file} are both plan {plan.name!r}; "
                    "plans of a directory need distinct names"
                )
            seen[plan.name] = m.file
        return loaded

    def pending(
        self,
        migrations: list[tuple[Migration, LoadedPlan]],
        rows: list[MigrationRow],
        *,
        force: bool,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[tuple[Migration, LoadedPlan]]:
        """The migrations left to apply; refuses changed applied files unless `force`.

        With `force` and a connection, the changed files' checksums are accepted as they are now.
        """
        from zdm.state.migrations import accept_checksum

        by_key = {m.key: m for m, _ in migrations}
        applied = {version_key(r.version): r for r in rows if r.applied}
        changed = [
            (by_key[key], row)
            for key, row in sorted(applied.items())
            if key in by_key and by_key[key].sha256 != row.sha256
        ]
        if changed and not force:
            listing = "\n  ".join(
                f"{self.directory / m.file} (version {m.version}, applied by run {row.run_id};"
                f" sha256 was {row.sha256[:12]}, is {m.sha256[:12]})"
                for m, row in changed
            )
            raise MigrationsChanged(
                f"applied migrations changed since they ran:\n  {listing}\n"
                "put the change in a new migration, or pass --force to accept the files as they are"
            )
        for m, row in changed:
            self.log.warning(
                "migration_checksum_accepted", file=m.file, was=row.sha256[:12], now=m.sha256[:12]
            )
            if conn is not None:
                accept_checksum(conn, self.store, row.version, m.sha256, m.file)
        for key, row in sorted(applied.items()):
            if key not in by_key:
                self.log.warning("migration_file_missing", version=row.version, file=row.file)
        todo = [(m, plan) for m, plan in migrations if m.key not in applied]
        newest = max(applied, default=None)
        late = [m for m, _ in todo if newest is not None and m.key < newest]
        if late and newest is not None and not force:
            raise MigrationsRefused(
                f"{self.directory / late[0].file} was never applied but is older than the newest"
                f" applied migration ({applied[newest].file}); give it a later version, or pass"
                " --force to apply it out of order"
            )
        return todo

    def migrate(self, *, force: bool = False, cont: bool = False) -> MigrateOutcome:
        from zdm.engine.pooling import require_pinned
        from zdm.engine.runner import Runner
        from zdm.engine.session import connect
        from zdm.state import PlanLock
        from zdm.state.migrations import read_history, record_applied

        migrations = self.load()
        assert self.dsn is not None
        conn = connect(self.dsn, "migrate")
        try:
            require_pinned(conn, self.dsn, "migrate")
            PlanLock(conn, MIGRATE_LOCK).acquire()
            self.store.ensure(conn)
            todo = self.pending(migrations, read_history(conn, self.store), force=force, conn=conn)
            done: list[str] = []
            for i, (m, loaded) in enumerate(todo):
                log = self.log.bind(migration=m.file)
                unfinished = self.store.unfinished_run(conn, loaded.name)
                resume_gate = (
                    cont
                    and i == 0
                    and unfinished is not None
                    and unfinished.status == RunStatus.WAITING
                )
                log.info("migration_start", version=m.version, plan=loaded.name)
                outcome = Runner(loaded, self.dsn, state_schema=self.state_schema, log=log).run(
                    cont=resume_gate, force=force
                )
                if outcome.status != RunStatus.COMPLETED:
                    hint = (
                        f"\n`zdm migrate {self.directory} --continue` passes the gate"
                        if outcome.status == RunStatus.WAITING
                        else ""
                    )
                    return MigrateOutcome(
                        outcome.status,
                        f"{m.file}: {outcome.message}{hint}",
                        outcome.exit_code,
                        tuple(done),
                    )
                record_applied(conn, self.store, m, plan=loaded.name, run_id=outcome.run_id)
                log.info("migration_applied", version=m.version, run=outcome.run_id)
                done.append(m.file)
        finally:
            conn.close()
        if not done:
            message = f"{self.directory}: all {len(migrations)} migrations already applied"
        else:
            message = f"{self.directory}: applied {len(done)} of {len(migrations)} migrations"
        return MigrateOutcome(RunStatus.COMPLETED, message, 0, tuple(done))

    def dry_run_lines(self, *, force: bool = False) -> Iterator[str]:
        """What `migrate` would apply, and each plan's dry-run; reads only, creates nothing."""
        from zdm.engine.dryrun import DryRun
        from zdm.engine.session import connect
        from zdm.state.migrations import read_history

        migrations = self.load()
        rows: list[MigrationRow] = []
        if self.dsn is not None:
            conn = connect(self.dsn, "migrate dry-run", autocommit=False)
            try:
                conn.execute("SET TRANSACTION READ ONLY")
                if self.store.exists(conn):
                    rows = read_history(conn, self.store)
            finally:
                conn.rollback()
                conn.close()
        todo = self.pending(migrations, rows, force=force)
        yield (
            f"-- zdm migrate dry-run of {self.directory}: {len(migrations)} migrations,"
            f" {len(todo)} to apply"
        )
        pending = {m.file for m, _ in todo}
        for m, _ in migrations:
            if m.file not in pending:
                yield f"-- {m.file}: applied"
        for m, loaded in todo:
            yield ""
            yield f"-- ===== migration {m.file} (version {m.version}) ====="
            yield from DryRun(loaded, self.dsn, state_schema=self.state_schema).lines()


def history(
    dsn: str, directory: str | Path | None = None, *, state_schema: str = "zdm"
) -> list[MigrationEntry]:
    """Recorded migrations in version order; with the directory, also its files not applied."""
    from zdm.engine.session import connect
    from zdm.state import Store
    from zdm.state.migrations import read_history
    from zdm.state.overview import MigrationEntry

    store = Store(state_schema)
    files = {m.key: m for m in scan(directory)} if directory is not None else {}
    with connect(dsn, "history") as conn:
        state = store.exists(conn)
        rows = read_history(conn, store) if state else []
        entries: dict[Version, MigrationEntry] = {}
        for row in rows:
            key = version_key(row.version)
            file = files.get(key)
            entries[key] = MigrationEntry.recorded(
                row,
                changed=file is not None and row.applied and file.sha256 != row.sha256,
                missing=directory is not None and file is None,
            )
        for key, m in files.items():
            if key in entries:
                continue
            try:
                name = _load(m).name
            except PlanError:
                name, run = m.path.stem, None
                status = "invalid"
            else:
                run = store.unfinished_run(conn, name) if state else None
                status = run.status if run is not None else StepStatus.PENDING
            run_id = run.id if run is not None else None
            entries[key] = MigrationEntry.unapplied(
                m.version, m.name, m.file, name, status, run_id, m.sha256
            )
    return [entries[key] for key in sorted(entries)]
